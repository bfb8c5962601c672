"""The store's API on both backends: the happy path and the typed errors."""

from __future__ import annotations

import anyio
import pytest

from store import (
    AssistantMessage,
    DuplicateTurnWrite,
    InvalidMessage,
    Store,
    ToolCall,
    ToolResult,
    TurnFinished,
    TurnNotFound,
    hooks,
)

from .conftest import Target
from .helpers import assert_clean, step

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus


async def test_a_turn_writes_user_message_steps_and_final_answer(store: Store) -> None:
    turn = await store.begin_turn("c", "build a page")
    assert not turn.duplicate
    assert await turn.commit_step(*step("a", 2)) == 1
    async with turn.step() as s:
        s.text("and ")
        s.text("more")
        s.tool_call("b_0", "read_document", {"path": "/"})
        s.tool_result("b_0", "the document")
    assert s.committed == 2
    await turn.finish("done")

    history = await store.history("c")
    assert [(m.position, m.role, m.step) for m in history] == [
        (0, "user", 0),
        (1, "assistant", 1),
        (2, "tool", 1),
        (3, "tool", 1),
        (4, "assistant", 2),
        (5, "tool", 2),
        (6, "assistant", 3),
    ]
    assert history[0].text == "build a page"
    assert [c.id for c in history[1].tool_calls] == ["a_0", "a_1"]
    assert history[1].tool_calls[1].arguments == {"i": 1}
    assert history[4].text == "and more"
    assert history[5].tool_call_id == "b_0" and history[5].tool_name == "read_document"
    info = await store.turn_status(turn.id)
    assert (info.status, info.steps, info.error) == ("finished", 3, None)
    await assert_clean(store)


async def test_finish_commits_a_last_step_with_tool_calls_and_ends_in_one_write(
    store: Store,
) -> None:
    """A step whose calls end the turn (a terminal tool) and the end: one transaction."""
    turn = await store.begin_turn("c", "publish the page")
    await turn.commit_step(*step("a", 1))
    before = hooks.backend(store).write_batches()
    message, results = step("last", 2)
    await turn.finish(message, list(reversed(results)))
    batches, writes = (
        a - b for a, b in zip(hooks.backend(store).write_batches(), before, strict=True)
    )
    assert (batches, writes) == (1, 1)
    info = await store.turn_status(turn.id)
    assert (info.status, info.steps, turn.steps) == ("finished", 2, 2)
    history = await store.history("c")
    assert [(m.role, m.step, m.tool_call_id) for m in history[-3:]] == [
        ("assistant", 2, None),
        ("tool", 2, "last_0"),
        ("tool", 2, "last_1"),
    ]
    assert (await store.replay("c", "openai-chat"))[1] == []  # nothing to repair
    await assert_clean(store)


@pytest.mark.parametrize(
    "bad",
    ["a call without its result", "a result without its message", "a call id used before"],
)
async def test_a_bad_last_step_is_refused_and_the_turn_still_runs(store: Store, bad: str) -> None:
    turn = await store.begin_turn("c", "publish the page")
    await turn.commit_step(*step("a", 1))
    message, results = step("last", 2)
    with pytest.raises(InvalidMessage):
        if bad == "a call without its result":
            await turn.finish(message, results[:1])
        elif bad == "a result without its message":
            await turn.finish(None, results)
        else:
            await turn.finish(*step("a", 1))
    assert turn.status == "running" and len(await store.history("c")) == 3
    await turn.finish(message, results)
    assert (await store.turn_status(turn.id)).status == "finished"
    await assert_clean(store)


async def test_results_are_stored_in_call_order_whatever_order_they_came_in(store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    calls = [ToolCall("x", "t", {}), ToolCall("y", "t", {}), ToolCall("z", "t", {})]
    results = [ToolResult("z", "3"), ToolResult("x", "1", is_error=True), ToolResult("y", "2")]
    await turn.commit_step(AssistantMessage("", calls), results)
    tools = [m for m in await store.history("c") if m.role == "tool"]
    assert [(m.tool_call_id, m.text, m.is_error) for m in tools] == [
        ("x", "1", True),
        ("y", "2", False),
        ("z", "3", False),
    ]


async def test_provider_data_and_reasoning_round_trip(store: Store) -> None:
    turn = await store.begin_turn(
        "c",
        [
            {"type": "text", "text": "hi"},
            {"type": "image", "mime_type": "image/png", "data": "AA=="},
        ],
    )
    message = AssistantMessage(
        [{"type": "reasoning", "format": "deepseek", "text": "think"}],
        [ToolCall("g1", "search", {"q": "x"}, provider_data={"thought_signature": "sig=="})],
    )
    await turn.commit_step(message, [ToolResult("g1", [{"type": "json", "value": {"a": 1}}])])
    history = await store.history("c")
    assert history[0].content[1]["mime_type"] == "image/png"
    assert history[1].content == [{"type": "reasoning", "format": "deepseek", "text": "think"}]
    assert history[1].tool_calls[0].provider_data == {"thought_signature": "sig=="}
    assert history[2].content == [{"type": "json", "value": {"a": 1}}]


async def test_history_window_starts_at_the_turn_it_would_cut(store: Store) -> None:
    first = await store.begin_turn("c", "go")  # position 0
    await first.commit_step(*step("a", 3))  # positions 1..4
    await first.finish()
    turn = await store.begin_turn("c", "again")  # position 5
    await turn.commit_step(*step("b", 3))  # positions 6..9
    await turn.finish()
    for last, start in [(1, 5), (2, 5), (4, 5), (5, 5), (6, 0), (9, 0), (10, 0), (100, 0)]:
        window = await store.history("c", last=last)
        assert window[0].position == start, last
        assert window[-1].position == 9
        assert window[0].role == "user"
    assert await store.history("c", last=0) == []
    assert await store.history("nobody") == []


async def test_writes_on_an_ended_turn_are_refused(store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    await turn.finish()
    with pytest.raises(TurnFinished):
        await turn.commit_step(*step("a"))
    with pytest.raises(TurnFinished):
        await turn.finish()
    with pytest.raises(TurnFinished):
        turn.step()
    failed = await store.begin_turn("c", "again")
    await failed.fail("the model errored")
    with pytest.raises(TurnFinished):
        await failed.commit_step(*step("b"))
    assert (await store.turn_status(failed.id)).error == "the model errored"
    assert len(await store.history("c")) == 2
    await assert_clean(store)


async def test_a_duplicate_handle_cannot_write_but_sees_the_outcome(store: Store) -> None:
    first = await store.begin_turn("c", "go", idempotency_key="req-1")
    again = await store.begin_turn("c", "go", idempotency_key="req-1")
    assert again.duplicate and again.id == first.id
    with pytest.raises(DuplicateTurnWrite):
        await again.commit_step(*step("a"))
    with pytest.raises(TimeoutError):
        await again.wait(timeout=0.05)
    await first.commit_step(*step("a"))
    await first.finish()
    outcome = await again.wait(timeout=5)
    assert (outcome.status, outcome.steps) == ("finished", 1)
    # after the turn ended, the same key is still the same submit
    late = await store.begin_turn("c", "go", idempotency_key="req-1")
    assert late.duplicate and late.id == first.id
    assert len(await store.history("c")) == 4


async def test_a_reused_key_with_another_message_is_refused(store: Store) -> None:
    await store.begin_turn("c", "go", idempotency_key="req-1")
    with pytest.raises(InvalidMessage, match="different message"):
        await store.begin_turn("c", "something else", idempotency_key="req-1")


async def test_keyless_same_message_is_one_submit_within_the_window(target) -> None:  # type: ignore[no-untyped-def]
    from store import StoreConfig

    store = await target.open(config=StoreConfig(duplicate_window_seconds=0.5))
    try:
        first = await store.begin_turn("c", "hello")
        assert (await store.begin_turn("c", "hello")).duplicate  # running
        await first.finish()
        assert (await store.begin_turn("c", "hello")).duplicate  # just ended
        await anyio.sleep(0.7)
        later = await store.begin_turn("c", "hello")  # the window has passed
        assert not later.duplicate
        await later.finish()
        other = await store.begin_turn("c", "another message")
        assert not other.duplicate
    finally:
        await store.close()


async def test_keyless_dedup_can_be_switched_off(target) -> None:  # type: ignore[no-untyped-def]
    from store import StoreConfig

    store = await target.open(config=StoreConfig(duplicate_window_seconds=0))
    try:
        first = await store.begin_turn("c", "hello")
        await first.finish()
        assert not (await store.begin_turn("c", "hello")).duplicate
    finally:
        await store.close()


async def test_turn_context_finishes_fails_or_interrupts(store: Store) -> None:
    async with store.turn("c", "one") as turn:
        await turn.commit_step(*step("a"))
    assert (await store.turn_status(turn.id)).status == "finished"

    with pytest.raises(RuntimeError):
        async with store.turn("c", "two") as turn2:
            raise RuntimeError("model crashed")
    info = await store.turn_status(turn2.id)
    assert info.status == "failed" and "model crashed" in (info.error or "")

    with anyio.move_on_after(0.05):
        async with store.turn("c", "three") as turn3:
            await anyio.sleep(10)
    assert (await store.turn_status(turn3.id)).status == "interrupted"
    await assert_clean(store)


async def test_unknown_turn(store: Store) -> None:
    with pytest.raises(TurnNotFound):
        await store.turn_status("turn_nope")


async def test_schema_migrations_are_recorded_and_idempotent(store: Store) -> None:
    from store import sql

    assert await store.migrate() == []
    expected = [m.version for m in sql.migrations(hooks.backend(store).dialect)]
    assert await hooks.backend(store).applied_versions() == expected


async def test_forgetting_to_await_open_explains_itself(target: Target) -> None:
    opening = Store.open(target.url, schema=target.schema)
    with pytest.raises(TypeError, match="was not awaited"):
        await opening.history("c")  # type: ignore[attr-defined]
    store = await opening
    await store.close()


async def test_an_in_memory_sqlite_database_is_refused_clearly() -> None:
    for url in ("sqlite+aiosqlite:///:memory:", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ValueError, match="in-memory SQLite"):
            await Store.open(url)


async def test_waiting_on_other_processes_turns_leaves_nothing_behind(
    store: Store, target: Target
) -> None:
    """A store that waits for turns of another process keeps no entry per turn waited."""
    other = await target.open()
    try:
        for i in range(20):
            turn = await other.begin_turn(f"c{i}", "go")
            await turn.finish()
            assert (await store.wait_for_turn(turn.id)).status == "finished"
        assert hooks.pending_wakeups(store) == 0
    finally:
        await other.close()
