"""A bad call inside ``turn.step()`` is refused where it is made and records nothing; the
step's valid work (checkpointed results above all: those tools ran) is committed when the
block exits, unanswered calls closed as interrupted, and the turn ends failed."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from store import InvalidMessage, Store, StoreConfig, hooks
from store.messages import INTERRUPTED

from .conftest import OpenStore
from .helpers import assert_clean

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus


async def test_a_refused_call_keeps_the_steps_checkpointed_work(store: Store) -> None:
    turn = await store.begin_turn("c", "build the page")
    with pytest.raises(InvalidMessage, match="typo_k2"):
        async with turn.step() as step:
            step.text("two sections")
            step.tool_call("k1", "insertHtml", {"html": "<p>1</p>"})
            step.tool_call("k2", "insertHtml", {"html": "<p>2</p>"})
            step.tool_result("k1", "inserted 1")
            await step.checkpoint()
            step.tool_result("typo_k2", "inserted 2")  # refused: not a call of this step
    history = await store.history("c")
    assert [(m.role, m.tool_call_id, m.is_error, m.text) for m in history] == [
        ("user", None, False, "build the page"),
        ("assistant", None, False, "two sections"),
        ("tool", "k1", False, "inserted 1"),
        ("tool", "k2", True, INTERRUPTED),
    ]
    info = await store.turn_status(turn.id)
    assert info.status == "failed" and "typo_k2" in (info.error or "")
    await assert_clean(store)


async def test_a_refused_call_that_is_caught_leaves_the_step_going(store: Store) -> None:
    turn = await store.begin_turn("c", "build the page")
    async with turn.step() as step:
        step.tool_call("k1", "insertHtml", {"html": "<p>1</p>"})
        with pytest.raises(InvalidMessage):
            step.tool_result("typo", "inserted")
        with pytest.raises(InvalidMessage):
            step.tool_call("k1", "insertHtml", {})  # a second call with the same id
        step.tool_result("k1", "inserted 1")
    await turn.finish()
    history = await store.history("c")
    assert [(m.role, m.tool_call_id, m.text) for m in history][1:] == [
        ("assistant", None, ""),
        ("tool", "k1", "inserted 1"),
    ]
    await assert_clean(store)


async def test_a_cancel_pending_as_a_step_block_ends_keeps_the_step(store: Store) -> None:
    """Found by the soak: a cancellation already pending when the block ends normally
    (a deadline that passed during its last await) must not throw the step away."""
    with anyio.CancelScope() as scope:
        async with store.turn("c", "build it") as turn, turn.step() as step:
            step.text("one tool")
            step.tool_call("a", "insertHtml", {})
            step.tool_result("a", "inserted a")
            await step.checkpoint()
            scope.cancel()
    assert step.committed == 1
    history = await store.history("c")
    assert [(m.role, m.tool_call_id, m.is_error, m.text) for m in history] == [
        ("user", None, False, "build it"),
        ("assistant", None, False, "one tool"),
        ("tool", "a", False, "inserted a"),
    ]
    # the block itself returned: whether the turn then ends finished or interrupted depends
    # on where the cancellation is delivered; the step is kept either way
    assert (await store.turn_status(turn.id)).status in ("finished", "interrupted")
    await assert_clean(store)


@pytest.mark.parametrize("how", ["fail", "interrupt", "finish", "finish_with_final"])
async def test_ending_a_turn_commits_its_checkpointed_step(store: Store, how: str) -> None:
    """A checkpointed step that its owner never committed goes into history when the owner
    ends the turn, as a takeover would commit it: those tools ran."""
    turn = await store.begin_turn("c", "build it")
    step = turn.step()  # not as a block: the runtime gave up on the step
    step.tool_call("a", "insertHtml", {})
    step.tool_call("b", "insertHtml", {})
    step.tool_result("a", "inserted a")
    await step.checkpoint()
    if how == "fail":
        await turn.fail("could not commit")
    elif how == "interrupt":
        await turn.interrupt()
    elif how == "finish":
        await turn.finish()
    else:
        await turn.finish("done")
    history = await store.history("c")
    rows = [(m.role, m.tool_call_id, m.is_error, m.text) for m in history]
    assert rows[:4] == [
        ("user", None, False, "build it"),
        ("assistant", None, False, ""),
        ("tool", "a", False, "inserted a"),
        ("tool", "b", True, INTERRUPTED),
    ]
    assert rows[4:] == ([("assistant", None, False, "done")] if how == "finish_with_final" else [])
    await assert_clean(store)


async def test_a_checkpoint_with_a_reused_call_id_is_refused(store: Store) -> None:
    """Found by the HTTP service's tests: a staged call reusing an id of the conversation
    could never be committed by the turn that takes over after a crash, which then failed
    every later submit. The checkpoint refuses it, naming the id, and stages nothing."""
    first = await store.begin_turn("c", "one")
    async with first.step() as step:
        step.tool_call("call_1", "insertHtml", {})
        step.tool_result("call_1", "ok")
    await first.finish()
    turn = await store.begin_turn("c", "two")
    step = turn.step()
    step.tool_call("call_1", "insertHtml", {})  # reused from the first turn
    step.tool_result("call_1", "ok")
    with pytest.raises(InvalidMessage, match="'call_1' is already used"):
        await step.checkpoint()
    await turn.fail("gave up")
    await assert_clean(store)


async def test_a_staged_step_with_a_reused_call_id_does_not_brick_the_conversation(
    open_store: OpenStore,
) -> None:
    """A step staged before checkpoints refused reused ids: the turn that takes over leaves
    that call out (and logs it) instead of failing every later submit."""
    store = await open_store(config=StoreConfig(lease_seconds=0.3, poll_max_seconds=0.02))
    first = await store.begin_turn("c", "one")
    async with first.step() as step:
        step.tool_call("call_1", "insertHtml", {})
        step.tool_result("call_1", "ok")
    await first.finish()
    turn = await store.begin_turn("c", "two")
    payload = json.dumps(
        {
            "content": [{"type": "text", "text": "again"}],
            "calls": [
                {"id": "call_1", "name": "insertHtml", "arguments": {}, "provider_data": None},
                {"id": "call_2", "name": "insertHtml", "arguments": {}, "provider_data": None},
            ],
            "results": [
                {"call_id": "call_1", "content": "dup", "is_error": False},
                {"call_id": "call_2", "content": "ok 2", "is_error": False},
            ],
        }
    )

    async def stage(tx: Any) -> None:  # as an older version staged it, unchecked
        await tx.run("stage_step", turn_id=turn.id, conversation_id="c", step=1, payload=payload)

    await hooks.backend(store).transaction("c", stage)
    await anyio.sleep(0.5)  # the lease runs out: the owner is gone
    with anyio.fail_after(10):
        successor = await store.begin_turn("c", "three")
    await successor.finish()
    history = await store.history("c")
    recovered = [(m.role, m.tool_call_id, m.text) for m in history if m.turn_id == turn.id]
    assert recovered == [("user", None, "two"), ("assistant", None, "again"),
                         ("tool", "call_2", "ok 2")]  # fmt: skip
    await assert_clean(store)
