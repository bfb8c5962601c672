"""Leases and fencing: a stalled turn loses its conversation and cannot write late; a live
turn keeps it; checkpointed work of a dead turn is recovered; broken connections retry."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from store import ConversationBusy, LeaseLost, StoreConfig
from store.messages import INTERRUPTED

from .conftest import Target, asyncpg_dsn
from .helpers import assert_clean, count_rows, step

# also on PostgreSQL with the Python claim rules (tests/conftest.py)
BOTH_CLAIM_PATHS = True
# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus

SHORT = StoreConfig(lease_seconds=0.3, poll_max_seconds=0.02)


async def test_a_stalled_writer_loses_to_a_new_turn_and_its_late_write_is_refused(
    target: Target,
) -> None:
    store = await target.open(config=SHORT)
    try:
        stalled = await store.begin_turn("c", "first")
        await stalled.commit_step(*step("a"))
        # no heartbeat: the model "hangs" past the lease
        with anyio.fail_after(5):
            successor = await store.begin_turn("c", "second")
        assert not successor.duplicate
        assert (await store.turn_status(stalled.id)).status == "expired"
        before = await count_rows(store)
        with pytest.raises(LeaseLost):
            await stalled.commit_step(*step("late"))
        with pytest.raises(LeaseLost):
            await stalled.finish("late answer")
        assert await count_rows(store) == before
        await successor.commit_step(*step("b"))
        await successor.finish()
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_late_last_step_with_tool_calls_is_refused_by_the_fence(
    target: Target,
) -> None:
    """The end that carries a step with calls is fenced in the database like a step."""
    store = await target.open(config=SHORT)
    try:
        stalled = await store.begin_turn("c", "first")
        with anyio.fail_after(5):
            successor = await store.begin_turn("c", "second")
        before = await count_rows(store)
        with pytest.raises(LeaseLost):
            await stalled.finish(*step("late"))  # its first write since it stalled
        assert await count_rows(store) == before
        await successor.finish(*step("b"))
        assert (await store.turn_status(successor.id)).status == "finished"
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_second_store_cannot_take_a_live_lease(target: Target) -> None:
    first_store = await target.open(config=SHORT)
    second_store = await target.open(config=SHORT)
    try:
        async with first_store.turn("c", "first") as turn:
            await anyio.sleep(1.0)  # > 3 leases: the heartbeat keeps it
            with pytest.raises(ConversationBusy):
                await second_store.begin_turn("c", "second", on_busy="fail")
            await turn.commit_step(*step("a"))
        assert (await first_store.turn_status(turn.id)).status == "finished"
    finally:
        await first_store.close()
        await second_store.close()


async def test_an_explicit_heartbeat_extends_the_lease(target: Target) -> None:
    store = await target.open(config=SHORT)
    try:
        turn = await store.begin_turn("c", "first")
        for _ in range(5):
            await anyio.sleep(0.15)
            await turn.heartbeat()
        with pytest.raises(ConversationBusy):
            await store.begin_turn("c", "second", on_busy="fail")
        await turn.commit_step(*step("a"))
    finally:
        await store.close()


async def test_checkpointed_results_of_a_dead_turn_are_recovered(target: Target) -> None:
    store = await target.open(config=SHORT)
    try:
        dead = await store.begin_turn("c", "first")
        await dead.commit_step(*step("a", 1))
        s = dead.step()
        s.text("writing the page")
        s.tool_call("x", "insertHtml", {"html": "<h1>"})
        s.tool_call("y", "insertHtml", {"html": "<h2>"})
        s.tool_result("x", "inserted")  # the tool ran: a side effect happened
        await s.checkpoint()
        # ... and the process dies here: no commit, no heartbeat.
        await anyio.sleep(0.4)
        successor = await store.begin_turn("c", "second")
        history = await store.history("c")
        roles = [(m.role, m.tool_call_id, m.is_error) for m in history]
        assert roles == [
            ("user", None, False),
            ("assistant", None, False),
            ("tool", "a_0", False),
            ("assistant", None, False),
            ("tool", "x", False),
            ("tool", "y", True),
            ("user", None, False),
        ]
        assert history[4].text == "inserted"
        assert history[5].text == INTERRUPTED
        assert history[3].turn_id == dead.id and history[3].step == 2
        info = await store.turn_status(dead.id)
        assert (info.status, info.steps) == ("expired", 2)
        await successor.finish()
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_checkpoint_after_takeover_is_refused(target: Target) -> None:
    store = await target.open(config=SHORT)
    try:
        dead = await store.begin_turn("c", "first")
        s = dead.step()
        s.tool_call("x", "t")
        await anyio.sleep(0.4)
        await store.begin_turn("c", "second")
        with pytest.raises(LeaseLost):
            await s.checkpoint()
    finally:
        await store.close()


async def test_terminated_connections_do_not_lose_or_duplicate_writes(
    pg_target: Target,
) -> None:
    store = await pg_target.open()
    killer = await asyncpg.connect(asyncpg_dsn(pg_target.url))

    async def kill() -> None:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = 'turnstore:{pg_target.schema}'"
        )

    try:
        for t in range(2):
            await kill()
            turn = await store.begin_turn("c", f"go {t}")
            for n in range(4):
                await kill()
                await turn.commit_step(*step(f"t{t}s{n}"))
            await kill()
            await turn.finish("done")
        await kill()
        history = await store.history("c")
        assert [m.step for m in history if m.role != "tool"] == [0, 1, 2, 3, 4, 5] * 2
        await assert_clean(store)
    finally:
        await killer.close()
        await store.close()
