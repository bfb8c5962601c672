"""Usage accounting (schema version 11): reports per step and per turn, append-only, exact
costs, retries answered by their id, sums per turn and per conversation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from store import InvalidMessage, LeaseLost, Store, TurnNotFound
from store.usage import sum_records

from .conftest import OpenStore, Target
from .helpers import assert_clean, step

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus


async def test_reports_are_summed_per_turn_and_per_conversation(store: Store) -> None:
    first = await store.begin_turn("c", "one")
    await first.commit_step(*step("a"))
    await store.record_usage(first, prompt_tokens=100, completion_tokens=20, step=1,
                             cache_read_tokens=50, cost_usd="0.001")  # fmt: skip
    await store.record_usage(first, prompt_tokens=10, cache_creation_tokens=7, cost_usd=0.0002)
    await first.finish("done")
    second = await store.begin_turn("c", "two")
    await store.record_usage(second, completion_tokens=3)  # no cost known
    await second.finish("ok")

    total, by_turn = await store.conversation_usage("c")
    assert (total.reports, total.prompt_tokens, total.completion_tokens) == (3, 110, 23)
    assert (total.cache_read_tokens, total.cache_creation_tokens) == (50, 7)
    assert total.cost_usd == Decimal("0.0012")  # exact, not 0.0012000000000000001
    assert by_turn[first.id].cost_usd == Decimal("0.0012")
    assert by_turn[second.id].cost_usd is None and by_turn[second.id].completion_tokens == 3
    reports = await store.turn_usage(first.id)
    assert [(r.seq, r.step) for r in reports] == [(1, 1), (2, None)]
    assert sum_records(reports) == by_turn[first.id]

    # a window's turns only: the second turn's user message is at position 5
    history = await store.history("c", last=1)
    _, window = await store.conversation_usage("c", from_position=history[0].position)
    assert set(window) == {second.id}
    await assert_clean(store)


async def test_a_report_repeated_by_its_id_is_counted_once(store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    one = await store.record_usage(turn, prompt_tokens=5, usage_id="u-1", model="m")
    again = await store.record_usage(turn, prompt_tokens=5, usage_id="u-1", model="m")
    assert not one.duplicate and again.duplicate and again.seq == one.seq
    with pytest.raises(InvalidMessage, match="already used"):
        await store.record_usage(turn, prompt_tokens=6, usage_id="u-1", model="m")
    total, _ = await store.conversation_usage("c")
    assert (total.reports, total.prompt_tokens) == (1, 5)


async def test_bad_reports_write_nothing(store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    for bad in ({"prompt_tokens": -1}, {"completion_tokens": 1.5}, {"cost_usd": "nan"},
                {"cost_usd": -0.1}, {"step": 0}, {"step": 2}, {"model": ""},
                {"prompt_tokens": 2**63}):  # fmt: skip
        with pytest.raises(InvalidMessage):
            await store.record_usage(turn, **bad)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost):
        await store.record_usage(turn.id, prompt_tokens=1, epoch=turn.epoch + 1)
    with pytest.raises(TurnNotFound):
        await store.record_usage("turn_nope", prompt_tokens=1)
    total, _ = await store.conversation_usage("c")
    assert total.reports == 0


async def test_usage_is_append_only_and_leaves_with_its_conversation(
    store: Store, target: Target, open_store: OpenStore
) -> None:
    turn = await store.begin_turn("c", "go")
    await store.record_usage(turn, prompt_tokens=5)
    await turn.finish("done")
    for statement in ("UPDATE turnstore_usage SET prompt_tokens = 0",
                      "DELETE FROM turnstore_usage"):  # fmt: skip
        with pytest.raises(Exception, match="append-only"):
            await target.raw_execute(statement)
    await store.delete_conversation("c")
    total, by_turn = await store.conversation_usage("c")
    assert total.reports == 0 and by_turn == {}


async def test_a_turn_records_its_own_usage(store: Store) -> None:
    turn = await store.begin_turn("c", "one")
    first = await turn.record_usage(prompt_tokens=12, completion_tokens=3, usage_id="u1")
    again = await turn.record_usage(prompt_tokens=12, completion_tokens=3, usage_id="u1")
    assert again.duplicate and again.seq == first.seq  # a retry, answered exactly
    await turn.finish("done")
    total, _ = await store.conversation_usage("c")
    assert (total.reports, total.prompt_tokens, total.completion_tokens) == (1, 12, 3)
