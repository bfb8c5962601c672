"""A bad call inside ``turn.step()`` is refused where it is made and records nothing; the
step's valid work (checkpointed results above all: those tools ran) is committed when the
block exits, unanswered calls closed as interrupted, and the turn ends failed."""

from __future__ import annotations

import pytest

from store import InvalidMessage, Store
from store.messages import INTERRUPTED

from .helpers import assert_clean


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
