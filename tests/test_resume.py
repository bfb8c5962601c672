"""A running turn picked up by id from another store (a restarted service), and the step it
had open, staged with the caller's bookkeeping: a takeover commits it as a checkpointed one."""

from __future__ import annotations

import anyio
import pytest

from store import (
    ConversationBusy,
    InvalidMessage,
    LeaseLost,
    Store,
    StoreConfig,
    TurnFinished,
    TurnNotFound,
)
from store.resume import buffer_from_payload, read_staged_step, stage_step
from store.turn import StepBuffer

from .conftest import OpenStore
from .helpers import assert_clean, step

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus


async def test_a_resumed_handle_writes_on_where_the_first_left_off(
    store: Store, open_store: OpenStore
) -> None:
    turn = await store.begin_turn("c", "go")
    await turn.commit_step(*step("a"))
    other = await open_store()
    again = await other.resume_turn(turn.id, epoch=turn.epoch)
    assert (again.steps, again.epoch, again.conversation_id) == (1, turn.epoch, "c")
    assert await again.commit_step(*step("b")) == 2
    await again.finish("done")
    assert [m.step for m in await store.history("c")] == [0, 1, 1, 1, 2, 2, 2, 3]
    with pytest.raises(TurnFinished):
        await other.resume_turn(turn.id)
    with pytest.raises(TurnNotFound):
        await other.resume_turn("turn_nope")
    await assert_clean(store)


async def test_resume_refuses_another_epoch_and_a_queued_turn(store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    with pytest.raises(LeaseLost):
        await store.resume_turn(turn.id, epoch=turn.epoch + 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: store.begin_turn("c", "next", idempotency_key="k"))
        await anyio.sleep(0.2)
        dup = await store.begin_turn("c", "next", idempotency_key="k")
        assert dup.duplicate and dup.status == "queued"
        with pytest.raises(ConversationBusy):
            await store.resume_turn(dup.id)
        await turn.finish()


async def test_a_staged_step_is_read_back_and_committed_by_a_takeover(
    open_store: OpenStore,
) -> None:
    short = StoreConfig(lease_seconds=0.5, poll_max_seconds=0.05)
    first = await open_store(config=short)
    turn = await first.begin_turn("c", "go")
    buffer = StepBuffer(turn)
    buffer.text("working")
    buffer.tool_call("a", "f", {"x": 1})
    buffer.tool_call("b", "f", {"x": 2})
    buffer.tool_result("a", "done")
    await stage_step(first, turn, buffer, {"events": 4})
    staged = await read_staged_step(first, turn, 1)
    rebuilt, meta = buffer_from_payload(turn, staged)
    assert meta == {"events": 4} and rebuilt.unanswered == ["b"]
    assert rebuilt.content == buffer.content and rebuilt.results == buffer.results

    # the process is gone: a submit after the lease takes over and commits the staged step
    await anyio.sleep(0.6)
    second = await open_store(config=short)
    nxt = await second.begin_turn("c", "again")
    await nxt.finish("ok")
    history = await second.history("c")
    assert [(m.role, m.tool_call_id, m.is_error) for m in history[1:4]] == [
        ("assistant", None, False), ("tool", "a", False), ("tool", "b", True)
    ]  # fmt: skip
    assert (await second.turn_status(turn.id)).status == "expired"
    await assert_clean(second)


async def test_a_step_a_takeover_could_not_commit_is_never_staged(store: Store) -> None:
    earlier = await store.begin_turn("c", "go")
    await earlier.commit_step(*step("a"))
    await earlier.finish()
    turn = await store.begin_turn("c", "again")
    reused = StepBuffer(turn)
    reused.tool_call("a_0", "f")  # an earlier turn's id: its commit would be refused
    with pytest.raises(InvalidMessage, match="already used"):
        await stage_step(store, turn, reused)
    with pytest.raises(InvalidMessage, match="empty"):
        await stage_step(store, turn, StepBuffer(turn))
    assert await read_staged_step(store, turn, 1) is None
