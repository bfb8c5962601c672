"""``TurnstoreSession`` against the SDK's ``Session`` protocol, on both backends: order,
limits, settings, pop and clear on append-only history, atomic and paired writes, calls
waiting for their output, concurrency from tasks, threads and event loops, exact outcomes."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest
from agents import SessionSettings
from agents.memory import Session

from store import ConversationBusy, InvalidMessage, StoreConfig, hooks
from store.checker import check
from store.integrations import agents_log
from store.integrations.openai_agents import TurnstoreSession
from store.messages import INTERRUPTED

from .helpers import MakeSession, call, output, said, step, user


async def _clean(session: TurnstoreSession) -> None:
    store = await session.get_store()
    report = await check(hooks.backend(store))
    assert report.ok, report.violations[:5]


# --- the protocol ---------------------------------------------------------------------------


async def test_it_is_a_session_and_takes_the_runners_wrapper(sessions: MakeSession) -> None:
    from agents.memory.session import _session_accepts_wrapper

    session = sessions()
    assert isinstance(session, Session)
    assert _session_accepts_wrapper(session)
    for private in ("_get_items_with_generation", "_add_items_with_generation"):
        assert not hasattr(session, private)  # hooks the Runner probes for: not by accident


async def test_items_come_back_in_order_and_limits_take_the_latest(
    sessions: MakeSession,
) -> None:
    session = sessions()
    items = [user("one"), said("two"), user("three"), said("four", "msg_2"), user("five")]
    await session.add_items(items[:2])
    await session.add_items(items[2:])
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[-2:]
    assert await session.get_items(limit=4) == items[-4:]
    assert await session.get_items(limit=10) == items
    assert await session.get_items(limit=0) == []
    await session.add_items([])
    assert await session.get_items() == items


async def test_limits_count_items_not_rows(sessions: MakeSession) -> None:
    """A tool row holds a call and its output, an assistant row several items: the latest
    N items are N items whatever rows hold them (an output can come without its call, as
    the SDK's own sessions return it; the Runner drops such an output)."""
    session = sessions()
    items = [user("go"), *step("c1", "c2"), said("done", "msg_done")]
    await session.add_items(items)
    for n in range(len(items) + 2):
        assert await session.get_items(limit=n) == (items[-n:] if n else [])


async def test_session_settings_are_normalized_and_apply_as_the_default_limit(
    sessions: MakeSession,
) -> None:
    assert sessions().session_settings == SessionSettings()
    limited = sessions(session_settings={"limit": 2})
    assert isinstance(limited.session_settings, SessionSettings)
    items = [user(f"m{i}") for i in range(5)]
    await limited.add_items(items)
    assert await limited.get_items() == items[-2:]
    assert await limited.get_items(limit=4) == items[-4:]
    with pytest.raises(TypeError, match="Unknown session settings: limitt"):
        sessions(session_settings={"limitt": 1})


async def test_sessions_of_one_database_keep_their_own_histories(sessions: MakeSession) -> None:
    one, other = sessions("one"), sessions("other")
    await one.add_items([user("for one")])
    await other.add_items([user("for other"), said("ok")])
    assert await one.get_items() == [user("for one")]
    assert await other.get_items() == [user("for other"), said("ok")]
    assert await other.pop_item() == said("ok")
    assert await one.get_items() == [user("for one")]


async def test_a_closed_session_refuses_every_call(sessions: MakeSession) -> None:
    session = sessions()
    await session.add_items([user("hi")])
    session.close()
    with pytest.raises(RuntimeError, match="TurnstoreSession is closed"):
        await session.add_items([])
    with pytest.raises(RuntimeError, match="is closed"):
        await session.get_items()
    reopened = sessions()
    assert await reopened.get_items() == [user("hi")]


# --- writes are atomic and paired --------------------------------------------------------------


async def test_function_calls_are_stored_as_paired_tool_rows(sessions: MakeSession) -> None:
    session = sessions()
    await session.add_items([user("go"), *step("c1", "c2")])
    store = await session.get_store()
    history = await store.history("conv")
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool"]
    assert [c.id for c in history[1].tool_calls] == ["c1", "c2"]
    assert [(m.tool_call_id, m.text) for m in history[2:]] == [("c1", "out c1"), ("c2", "out c2")]
    for provider in ("openai-responses", "openai-chat", "anthropic", "gemini"):
        _, repairs = await store.replay("conv", provider)
        assert repairs == []
    await _clean(session)


async def test_a_refused_write_writes_nothing(sessions: MakeSession) -> None:
    session = sessions()
    await session.add_items([user("go")])
    bad = [said("a"), call("c1"), output("c1"), output("nobody")]
    with pytest.raises(InvalidMessage, match="nobody"):
        await session.add_items(bad)
    with pytest.raises(InvalidMessage):
        await session.add_items([said("b"), {"type": "message", "bad": float("nan")}])
    with pytest.raises(InvalidMessage, match="second function_call_output"):
        await session.add_items([call("c2"), output("c2"), output("c2")])
    assert await session.get_items() == [user("go")]
    store = await session.get_store()
    assert len(await store.history("conv")) == 1


async def test_an_output_must_follow_its_call(sessions: MakeSession) -> None:
    session = sessions()
    with pytest.raises(InvalidMessage, match="function_call_output for call 'c1'"):
        await session.add_items([user("go"), output("c1"), call("c1")])
    assert await session.get_items() == []


async def test_items_before_any_user_message_have_a_turn_of_their_own(
    sessions: MakeSession,
) -> None:
    session = sessions()
    items = [{"role": "system", "content": "Be brief."}, said("hello"), *step("c1")]
    await session.add_items(items)
    assert await session.get_items() == items
    await _clean(session)


async def test_a_reused_call_id_is_stored_under_an_id_of_its_own(sessions: MakeSession) -> None:
    """The conversation already has the id (a cleared or popped call added again): the tool
    row gets the id with a suffix; the session gives the item back as it came."""
    session = sessions()
    await session.add_items([user("go"), *step("c1")])
    await session.clear_session()
    again = [user("again"), *step("c1")]
    await session.add_items(again)
    assert await session.get_items() == again
    store = await session.get_store()
    ids = [m.tool_call_id for m in await store.history("conv") if m.role == "tool"]
    assert ids[0] == "c1" and ids[1].startswith("c1~") and len(set(ids)) == 2
    await _clean(session)


# --- pop and clear ------------------------------------------------------------------------------


async def test_pop_returns_the_latest_items_one_by_one(sessions: MakeSession) -> None:
    session = sessions()
    assert await session.pop_item() is None
    items = [user("go"), *step("c1", "c2"), said("done", "msg_done")]
    await session.add_items(items)
    for expected in reversed(items):
        assert await session.pop_item() == expected
    assert await session.pop_item() is None
    assert await session.get_items() == []
    store = await session.get_store()
    assert len(await store.history("conv")) == 5  # history is not rewritten


async def test_popping_an_output_leaves_its_call_and_refuses_a_new_output(
    sessions: MakeSession,
) -> None:
    """Never an orphan output: popping the output of a pair leaves its call without one
    until the call is popped too; then both can be added again."""
    session = sessions()
    await session.add_items([user("go"), call("c1"), output("c1", "first")])
    assert await session.pop_item() == output("c1", "first")
    assert await session.get_items() == [user("go"), call("c1")]
    with pytest.raises(InvalidMessage, match="pop the call as well"):
        await session.add_items([output("c1", "second")])
    assert await session.pop_item() == call("c1")
    await session.add_items([call("c1"), output("c1", "second")])
    assert await session.get_items() == [user("go"), call("c1"), output("c1", "second")]
    await _clean(session)


async def test_two_sessions_popping_at_once_get_each_item_once(sessions: MakeSession) -> None:
    writer, other = sessions(), sessions()
    items = [user(f"m{i}") for i in range(6)]
    await writer.add_items(items)
    popped = await asyncio.gather(*(s.pop_item() for s in (writer, other) for _ in range(4)))
    got = [item["content"] for item in popped if item is not None]
    assert sorted(got) == sorted(i["content"] for i in items)
    assert popped.count(None) == 2


async def test_clear_hides_everything_and_deletes_nothing(sessions: MakeSession) -> None:
    session = sessions()
    await session.add_items([user("go"), *step("c1")])
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    store = await session.get_store()
    assert len(await store.history("conv")) == 3
    await session.add_items([user("after")])
    assert await session.get_items() == [user("after")]
    erased = await session.delete_conversation()
    assert (erased.messages, erased.session_marks) == (4, 1)
    assert await store.history("conv") == []
    await _clean(session)


# --- calls waiting for their output (human approval) -----------------------------------------


async def test_a_call_alone_is_staged_and_committed_paired_with_its_output(
    sessions: MakeSession,
) -> None:
    session = sessions()
    await session.add_items([user("delete /tmp/x")])
    waiting = [said("I will delete it"), call("c1", "delete")]
    await session.add_items(waiting)
    assert await session.get_items() == [user("delete /tmp/x"), *waiting]
    assert await session.get_items(limit=1) == [call("c1", "delete")]
    store = await session.get_store()
    assert len(await store.history("conv")) == 1  # staged, not in history
    await session.add_items([output("c1", "deleted")])
    assert await session.get_items() == [user("delete /tmp/x"), *waiting, output("c1", "deleted")]
    assert [m.role for m in await store.history("conv")] == ["user", "assistant", "tool"]
    await _clean(session)


async def test_a_new_user_message_closes_a_waiting_call_as_interrupted(
    sessions: MakeSession,
) -> None:
    session = sessions()
    await session.add_items([user("delete /tmp/x"), call("c1", "delete")])
    await session.add_items([user("never mind")])
    interrupted = {"type": "function_call_output", "call_id": "c1", "output": INTERRUPTED}
    assert await session.get_items() == [
        user("delete /tmp/x"),
        call("c1", "delete"),
        interrupted,
        user("never mind"),
    ]
    with pytest.raises(InvalidMessage):
        await session.add_items([output("c1", "too late")])
    await _clean(session)


async def test_a_waiting_call_can_be_popped(sessions: MakeSession) -> None:
    session = sessions()
    await session.add_items([user("go"), said("calling"), call("c1")])
    assert await session.pop_item() == call("c1")
    assert await session.get_items() == [user("go"), said("calling")]
    assert await session.pop_item() == said("calling")
    assert await session.get_items() == [user("go")]
    await _clean(session)


async def test_a_call_waiting_past_its_approval_time_is_taken_over_as_interrupted(
    sessions: MakeSession,
) -> None:
    session = sessions(approval_timeout=0.2)
    await session.add_items([user("go"), call("c1", "delete")])
    store = await session.get_store()
    await anyio.sleep(0.3)
    turn = await store.begin_turn("conv", "someone else")  # takes the conversation over
    await turn.finish("ok")
    items = await session.get_items()
    assert items[1:3] == [
        call("c1", "delete"),
        {"type": "function_call_output", "call_id": "c1", "output": INTERRUPTED},
    ]
    await _clean(session)


async def test_a_waiting_call_holds_the_conversation_against_other_turns(
    sessions: MakeSession,
) -> None:
    session = sessions()
    await session.add_items([user("go"), call("c1", "delete")])
    store = await session.get_store()
    with pytest.raises(ConversationBusy):
        await store.begin_turn("conv", "someone else", on_busy="fail")
    await session.add_items([output("c1", "done")])
    turn = await store.begin_turn("conv", "someone else", on_busy="fail")
    await turn.finish()


# --- concurrency ---------------------------------------------------------------------------------


async def test_concurrent_writes_from_tasks_are_each_whole(sessions: MakeSession) -> None:
    session = sessions()
    batches = [[user(f"u{i}"), *step(f"c{i}a", f"c{i}b")] for i in range(12)]
    async with anyio.create_task_group() as tg:
        for batch in batches:
            tg.start_soon(session.add_items, batch)
    items = await session.get_items()
    assert len(items) == sum(len(b) for b in batches)
    for batch in batches:  # each write is contiguous: nothing came between its items
        start = items.index(batch[0])
        assert items[start : start + len(batch)] == batch
    await _clean(session)


def _in_threads(work: Any, count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            asyncio.run(work(index))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


async def test_one_session_object_works_from_several_threads_and_loops(
    sessions: MakeSession,
) -> None:
    session = sessions()
    await session.add_items([user("from the test's loop")])

    async def work(index: int) -> None:
        await session.add_items([user(f"thread {index}"), said(f"reply {index}", f"m{index}")])
        assert user(f"thread {index}") in await session.get_items()

    errors = await anyio.to_thread.run_sync(_in_threads, work, 4)
    assert errors == []
    items = await session.get_items()
    assert len(items) == 9
    assert {i["content"] for i in items if i.get("role") == "user"} == {
        "from the test's loop",
        *(f"thread {i}" for i in range(4)),
    }
    for i in range(4):  # each write whole
        start = items.index(user(f"thread {i}"))
        assert items[start + 1] == said(f"reply {i}", f"m{i}")
    await _clean(session)


async def test_a_session_can_be_built_outside_any_loop_and_used_in_one() -> None:
    made: list[TurnstoreSession] = []
    sessions_built = await anyio.to_thread.run_sync(lambda: made.append(TurnstoreSession("x")))
    assert sessions_built is None and made[0].session_id == "x"
    made[0].close()  # nothing was opened: nothing to close


async def test_writes_wait_for_a_turn_of_another_caller(sessions: MakeSession) -> None:
    """A plain write while another caller's turn holds the conversation waits for it (or
    is refused with ConversationBusy after the busy timeout): it never lands inside it."""
    patient = sessions()
    hurried = sessions(config=StoreConfig(busy_timeout=0.2, poll_max_seconds=0.05))
    store = await patient.get_store()
    turn = await store.begin_turn("conv", "a turn of another caller")
    with pytest.raises(ConversationBusy):
        await hurried.add_items([user("too soon")])
    async with anyio.create_task_group() as tg:
        tg.start_soon(patient.add_items, [user("after it")])
        await anyio.sleep(0.1)
        await turn.finish("its answer")
    items = await patient.get_items()
    assert [i.get("content") for i in items] == [
        "a turn of another caller",
        "its answer",
        "after it",
    ]


async def test_a_cancelled_write_finishes_before_the_cancellation_is_raised(
    sessions: MakeSession,
) -> None:
    session = sessions()
    task = asyncio.ensure_future(session.add_items([user("go"), *step("c1", "c2")]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    items = await session.get_items()
    assert items in ([], [user("go"), *step("c1", "c2")])  # all of it, or nothing
    await _clean(session)


# --- exact outcomes ------------------------------------------------------------------------


async def test_a_write_repeated_with_its_id_is_answered_not_applied_twice(
    sessions: MakeSession,
) -> None:
    """What a retry after a lost reply does: the write's record answers it."""
    session = sessions()
    store = await session.get_store()
    batch = [user("once"), *step("c1")]
    for _ in range(2):
        done = await agents_log.add(store, "conv", batch, write_id="w1", own=None, approval=60)
        assert isinstance(done, agents_log.Done)
    assert await session.get_items() == batch
    await session.add_items([said("last", "m_last")])
    popped = [
        await agents_log.pop(store, "conv", write_id="p1", own=None, approval=60) for _ in range(2)
    ]
    assert [p.value for p in popped if isinstance(p, agents_log.Done)] == [
        said("last", "m_last")
    ] * 2
    assert await session.get_items() == batch


async def test_a_new_turn_abandons_a_call_of_a_plain_run_waiting_for_approval(
    sessions: MakeSession,
) -> None:
    """A plain run left a call waiting for approval (its turn holds the conversation): a
    run begun with ``session.turn`` is new input, which abandons it, as a user message does;
    its claim, waiting behind that turn, finds it and closes the call as interrupted."""
    session = sessions()
    await session.add_items([user("delete /tmp/x"), call("c1", "delete")])
    with anyio.fail_after(30):
        async with session.turn("something else", idempotency_key="k") as run:
            assert not run.duplicate
    interrupted = {"type": "function_call_output", "call_id": "c1", "output": INTERRUPTED}
    assert await session.get_items() == [
        user("delete /tmp/x"),
        call("c1", "delete"),
        interrupted,
        {"content": "something else", "role": "user"},
    ]
    await _clean(session)


async def test_a_write_in_a_cancelled_scope_completes_before_the_scope_exits(
    sessions: MakeSession,
) -> None:
    """anyio's cancellation waits behind the write (no busy re-delivery), then arrives."""
    session = sessions()
    assert await session.get_items() == []  # the store is open: the write starts at once
    batch = [user("go"), *step("c1")]
    with anyio.CancelScope() as scope:
        scope.cancel()
        await session.add_items(batch)
    assert scope.cancelled_caught
    assert await session.get_items() == batch
