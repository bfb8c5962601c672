"""End to end with the SDK's real ``Runner`` and a scripted model (the SDK's ``Model``
interface): tool steps with parallel calls, a human approval interrupting a run and its
resume, cancellation while a tool runs, double submits and concurrent runs with
``session.turn(...)``. On both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from agents import Agent, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from store import ConversationBusy, hooks
from store.checker import check
from store.integrations.openai_agents import TurnstoreSession
from store.messages import INTERRUPTED

from .helpers import MakeSession


@function_tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@function_tool(needs_approval=True)
async def delete_file(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def _agent(model: ScriptedModel, *tools: Any) -> Agent:
    return Agent(name="assistant", model=model, tools=list(tools) or [add, delete_file])


def _tool_run(model: ScriptedModel, tag: str, answer: str) -> None:
    """Script one run: a step of two parallel calls, then the answer."""
    model.enqueue(
        [
            assistant_message(f"adding for {tag}", item_id=f"msg_{tag}"),
            function_call("add", {"a": 1, "b": 2}, call_id=f"{tag}_a"),
            function_call("add", {"a": 3, "b": 4}, call_id=f"{tag}_b"),
        ]
    )
    model.enqueue([assistant_message(answer, item_id=f"answer_{tag}")])


async def _assert_clean(session: TurnstoreSession) -> None:
    store = await session.get_store()
    report = await check(hooks.backend(store))
    assert report.ok, report.violations[:5]
    for provider in ("openai-responses", "openai-chat", "anthropic", "gemini"):
        _, repairs = await store.replay(session.session_id, provider)
        assert not [r for r in repairs if r.kind in ("orphan_result", "unanswered_call")]


def _kinds(items: list[Any]) -> list[str]:
    return [i.get("type") or i.get("role") for i in items]


@pytest.mark.parametrize("method", ["run", "run_streamed"])
async def test_tool_steps_are_atomic_paired_writes(sessions: MakeSession, method: str) -> None:
    session = sessions()
    model = ScriptedModel()
    _tool_run(model, "t1", "3 and 7")
    if method == "run":
        result = await Runner.run(_agent(model), "add things", session=session)
    else:
        streamed = Runner.run_streamed(_agent(model), "add things", session=session)
        async for _ in streamed.stream_events():
            pass
        result = streamed
    assert result.final_output == "3 and 7"
    items = await session.get_items()
    assert _kinds(items) == [
        "user",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]
    store = await session.get_store()
    history = await store.history(session.session_id)
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m.text for m in history[2:4]] == ["3", "7"]
    _tool_run(model, "t2", "again")
    await Runner.run(_agent(model), "and again", session=session)
    assert model.calls[-2].input[: len(items)] == items  # the history went to the model
    await _assert_clean(session)


async def test_run_sync_in_a_worker_thread_uses_the_same_session(sessions: MakeSession) -> None:
    session = sessions()
    model = ScriptedModel()
    model.enqueue([assistant_message("from a thread")])
    model.enqueue([assistant_message("from the loop")])
    result = await anyio.to_thread.run_sync(
        lambda: Runner.run_sync(_agent(model), "hello", session=session)
    )
    assert result.final_output == "from a thread"
    await Runner.run(_agent(model), "again", session=session)
    assert [i.get("role") for i in await session.get_items()] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]


async def test_an_approval_interrupts_a_run_and_its_resume_pairs_the_call(
    sessions: MakeSession,
) -> None:
    session = sessions()
    model = ScriptedModel()
    model.enqueue([function_call("delete_file", {"path": "/tmp/x"}, call_id="del_1")])
    result = await Runner.run(_agent(model), "delete /tmp/x", session=session)
    assert [i.name for i in result.interruptions] == ["delete_file"]
    waiting = await session.get_items()
    assert _kinds(waiting) == ["user", "function_call"]  # staged, shown while it waits
    store = await session.get_store()
    assert len(await store.history(session.session_id)) == 1

    state = result.to_state()
    state.approve(result.interruptions[0])
    model.enqueue([assistant_message("deleted it")])
    resumed = await Runner.run(_agent(model), state, session=session)
    assert resumed.final_output == "deleted it"
    items = await session.get_items()
    assert _kinds(items) == ["user", "function_call", "function_call_output", "message"]
    assert items[2]["output"] == "deleted /tmp/x"
    assert [m.role for m in await store.history(session.session_id)] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    await _assert_clean(session)


async def test_an_approval_inside_a_turn_and_one_abandoned_with_it(sessions: MakeSession) -> None:
    session = sessions()
    model = ScriptedModel()
    agent = _agent(model)
    async with session.turn("delete /tmp/x", idempotency_key="k1") as run:
        model.enqueue([function_call("delete_file", {"path": "/tmp/x"}, call_id="del_1")])
        result = await Runner.run(agent, run.input, session=session)
        state = result.to_state()
        state.reject(result.interruptions[0])
        model.enqueue([assistant_message("not deleted")])
        result = await Runner.run(agent, state, session=session)
    assert result.final_output == "not deleted"
    assert (await run.wait()).status == "finished"
    assert _kinds(await session.get_items()) == [
        "user",
        "function_call",
        "function_call_output",
        "message",
    ]

    async with session.turn("delete /tmp/y", idempotency_key="k2") as run:
        model.enqueue([function_call("delete_file", {"path": "/tmp/y"}, call_id="del_2")])
        result = await Runner.run(agent, run.input, session=session)
        assert result.interruptions  # the block ends without an answer: abandoned
    items = await session.get_items()
    assert items[-2:] == [
        {**items[-2], "call_id": "del_2"},
        {"type": "function_call_output", "call_id": "del_2", "output": INTERRUPTED},
    ]
    await _assert_clean(session)


async def test_cancelling_a_run_while_a_tool_runs_keeps_only_the_input(
    sessions: MakeSession,
) -> None:
    started = anyio.Event()

    @function_tool
    async def slow(seconds: int) -> str:
        """Take a while."""
        started.set()
        await anyio.sleep(3600)
        return "late"

    session = sessions()
    model = ScriptedModel()
    model.enqueue([function_call("slow", {"seconds": 9}, call_id="slow_1")])
    task = asyncio.ensure_future(Runner.run(_agent(model, slow), "be slow", session=session))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await session.get_items() == [{"content": "be slow", "role": "user"}]
    model.enqueue([assistant_message("quick this time")])
    result = await Runner.run(_agent(model, slow), "be quick", session=session)
    assert result.final_output == "quick this time"
    await _assert_clean(session)


async def test_a_cancelled_turn_ends_interrupted_and_the_next_one_runs(
    sessions: MakeSession,
) -> None:
    started = anyio.Event()

    @function_tool
    async def slow(seconds: int) -> str:
        """Take a while."""
        started.set()
        await anyio.sleep(3600)
        return "late"

    session = sessions()
    model = ScriptedModel()
    model.enqueue([function_call("slow", {"seconds": 9}, call_id="slow_1")])
    runs: list[Any] = []

    async def submit() -> None:
        async with session.turn("be slow", idempotency_key="slow") as run:
            runs.append(run)
            await Runner.run(_agent(model, slow), run.input, session=session)

    task = asyncio.ensure_future(submit())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    outcome = await runs[0].wait()
    assert outcome.status == "interrupted"
    model.enqueue([assistant_message("next")])
    async with session.turn("next one", idempotency_key="next") as run:
        result = await Runner.run(_agent(model, slow), run.input, session=session)
    assert result.final_output == "next"
    assert _kinds(await session.get_items()) == ["user", "user", "message"]
    await _assert_clean(session)


async def test_a_double_submit_runs_once_and_the_duplicate_gets_its_outcome(
    sessions: MakeSession,
) -> None:
    session = sessions()
    model = ScriptedModel()
    _tool_run(model, "once", "done once")  # one run's script: a second run would run out
    results: dict[str, Any] = {}

    async def submit(name: str) -> None:
        async with session.turn("add things", idempotency_key="req-1") as run:
            if run.duplicate:
                results[name] = ("duplicate", await run.wait(), await run.items())
            else:
                result = await Runner.run(_agent(model), run.input, session=session)
                results[name] = ("ran", result.final_output, None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, "first")
        tg.start_soon(submit, "second")
    kinds = sorted(r[0] for r in results.values())
    assert kinds == ["duplicate", "ran"]
    (duplicate,) = [r for r in results.values() if r[0] == "duplicate"]
    assert duplicate[1].status == "finished"
    assert duplicate[2] == await session.get_items()  # what the first run stored
    assert len(model.calls) == 2
    items = await session.get_items()
    assert [i for i in items if i.get("role") == "user"] == [
        {"content": "add things", "role": "user"}
    ]
    await _assert_clean(session)


async def test_concurrent_runs_queue_and_never_interleave(sessions: MakeSession) -> None:
    session = sessions()
    models = {n: ScriptedModel() for n in range(4)}
    for n, model in models.items():
        _tool_run(model, f"r{n}", f"answer {n}")

    async def submit(n: int) -> None:
        async with session.turn(f"question {n}", idempotency_key=f"req-{n}") as run:
            await Runner.run(_agent(models[n]), run.input, session=session)

    async with anyio.create_task_group() as tg:
        for n in models:
            tg.start_soon(submit, n)
    items = await session.get_items()
    assert len(items) == 4 * 7
    for run in range(4):  # each run's 7 items together: user, step, answer
        block = items[run * 7 : (run + 1) * 7]
        tag = block[0]["content"].split()[-1]
        assert [i.get("call_id") for i in block if i.get("call_id")] == [
            f"r{tag}_a",
            f"r{tag}_b",
            f"r{tag}_a",
            f"r{tag}_b",
        ]
        assert block[-1]["content"][0]["text"] == f"answer {tag}"
    await _assert_clean(session)


async def test_a_busy_conversation_can_be_refused(sessions: MakeSession) -> None:
    session = sessions()
    async with session.turn("first", idempotency_key="a"):
        with pytest.raises(ConversationBusy):
            async with sessions().turn("second", idempotency_key="b", on_busy="fail"):
                pass


async def test_plain_concurrent_runs_interleave_but_every_write_stays_paired(
    sessions: MakeSession,
) -> None:
    """Without ``session.turn`` runs are not serialized (as with the SDK's own sessions):
    their items may interleave, each write whole, and the history stays paired."""
    session = sessions()
    models = {n: ScriptedModel() for n in range(4)}
    for n, model in models.items():
        _tool_run(model, f"p{n}", f"answer {n}")

    async def plain(n: int) -> None:
        await Runner.run(_agent(models[n]), f"question {n}", session=session)

    async with anyio.create_task_group() as tg:
        for n in models:
            tg.start_soon(plain, n)
    items = await session.get_items()
    assert len(items) == 4 * 7
    await _assert_clean(session)


async def test_a_run_cancelled_while_it_waits_in_line_leaves_nothing_holding_the_conversation(
    sessions: MakeSession,
) -> None:
    """``Task.cancel()``, as a client going away does, on a run waiting for its turn (or
    just given it): the next run starts as soon as the first ends, not after a lease."""
    session = sessions()
    model = ScriptedModel()
    release = anyio.Event()
    waiting: list[asyncio.Task[None]] = []

    async def first() -> None:
        async with session.turn("first", idempotency_key="first"):
            await release.wait()

    async def second() -> None:
        async with session.turn("second", idempotency_key="second") as run:
            await Runner.run(_agent(model), run.input, session=session)

    holder = asyncio.ensure_future(first())
    await anyio.sleep(0.05)
    for _ in range(3):  # cancelled at different points: queued, or handed the turn
        task = asyncio.ensure_future(second())
        waiting.append(task)
        await anyio.sleep(0.02)
        task.cancel()
    release.set()
    await holder
    await asyncio.gather(*waiting, return_exceptions=True)
    model.enqueue([assistant_message("third")])
    with anyio.fail_after(10):  # a turn left running would hold it for the lease (30 s)
        async with session.turn("third", idempotency_key="third") as run:
            result = await Runner.run(_agent(model), run.input, session=session)
    assert result.final_output == "third"
    await _assert_clean(session)
