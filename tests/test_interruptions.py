"""Cancellation and errors inside steps: what ran is committed, every unanswered call gets
exactly one "interrupted" error result, and the turn ends interrupted or failed."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from store import Store
from store.messages import INTERRUPTED

from .helpers import assert_clean, count_rows

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus

CASES = 250


async def _interrupted_step(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    cid = f"c{seed}"
    turn = await store.begin_turn(cid, f"prompt {seed}")
    calls = rng.randint(0, 4)
    with_text = rng.random() < 0.5
    # events: [text?] call_0..call_n-1, result_0..result_n-1 (results in random order)
    events = (["text"] if with_text else []) + [f"call:{i}" for i in range(calls)]
    result_order = list(range(calls))
    rng.shuffle(result_order)
    events += [f"result:{i}" for i in result_order]
    stop_at = rng.randint(0, len(events))  # cancel (or raise) before this event
    how = rng.choice(["cancel", "raise"])

    answered: set[int] = set()
    made: list[int] = []
    with anyio.CancelScope() as scope:
        try:
            async with turn.step() as s:
                for n, event in enumerate(events):
                    if n == stop_at:
                        if how == "cancel":
                            scope.cancel()
                            await anyio.lowlevel.checkpoint()  # the cancellation lands here
                        raise RuntimeError("tool crashed")
                    kind, _, idx = event.partition(":")
                    if kind == "text":
                        s.text("working")
                    elif kind == "call":
                        s.tool_call(f"{cid}_{idx}", "insertHtml", {"n": int(idx)})
                        made.append(int(idx))
                    else:
                        await anyio.lowlevel.checkpoint()
                        s.tool_result(f"{cid}_{idx}", f"done {idx}")
                        answered.add(int(idx))
        except RuntimeError:
            assert how == "raise" or stop_at == len(events)
    completed = stop_at == len(events)
    history = await store.history(cid)
    status = (await store.turn_status(turn.id)).status
    produced = (with_text and stop_at > 0) or bool(made)
    if completed:
        assert status == "running"
        await turn.finish()
    else:
        assert status == ("interrupted" if how == "cancel" else "failed"), (seed, status)
    if not produced:
        assert len(history) == 1, "a step that produced nothing wrote nothing"
        return
    assistant = history[1]
    assert [c.id for c in assistant.tool_calls] == [f"{cid}_{i}" for i in made]
    tools = history[2 : 2 + len(made)]
    for i, row in zip(made, tools, strict=True):
        assert row.tool_call_id == f"{cid}_{i}"
        if i in answered:
            assert (row.text, row.is_error) == (f"done {i}", False)
        else:
            assert row.is_error and row.text == INTERRUPTED


@pytest.mark.parametrize("chunk", range(5))
async def test_random_interruption_points(store: Store, chunk: int) -> None:
    for seed in range(chunk * CASES // 5, (chunk + 1) * CASES // 5):
        await _interrupted_step(store, seed)
    await assert_clean(store)


async def test_a_cancelled_step_with_nothing_produced_writes_nothing(store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    with anyio.move_on_after(0.01):
        async with turn.step():
            await anyio.sleep(1)
    assert await count_rows(store, "c") == (1, 1)
    assert (await store.turn_status(turn.id)).status == "interrupted"


async def test_the_interrupted_commit_survives_repeated_cancellation(store: Store) -> None:
    """The shielded commit completes even when the cancel scope is hammered."""
    turn = await store.begin_turn("c", "go")
    with anyio.CancelScope() as scope:
        async with turn.step() as s:
            s.tool_call("a", "t")
            s.tool_call("b", "t")
            s.tool_result("a", "ran")
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    rows = await store.history("c")
    assert [(m.role, m.is_error) for m in rows] == [
        ("user", False),
        ("assistant", False),
        ("tool", False),
        ("tool", True),
    ]
    await assert_clean(store)
