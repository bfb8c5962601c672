"""Short runs of every baseline, checked by the checker pass: 1 s per system, small W and C,
high double-submit and interrupt rates so that every path runs."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from benchmarks.adapters import ADAPTERS
from benchmarks.checker import KINDS
from benchmarks.dbtarget import parse_db_url
from benchmarks.system_run import SystemResult, run_system
from benchmarks.workload import WorkloadParams

SchemaLister = Callable[[str], Awaitable[list[str]]]

STORM = WorkloadParams(
    workers=6, conversations=3, steps=2, tool_calls=3, duration=1.0,
    double_submit=0.3, interrupt=0.3, seed=11,
)  # fmt: skip
CALM = WorkloadParams(
    workers=8, conversations=4, steps=2, tool_calls=3, duration=1.0,
    double_submit=0.0, interrupt=0.0, seed=12,
)  # fmt: skip

# what each system can break: everything else must stay at zero
ALLOWED = {
    "store": set(),
    "store-end-apart": set(),
    "raw": {"duplicate_user_messages"},
    "raw-locked": {"duplicate_user_messages"},
    "agents-sdk": {"duplicate_user_messages"},
    "naive": set(KINDS) - {"lost_steps", "duplicated_steps", "position_gaps"},
}


def assert_sane(r: SystemResult, params: WorkloadParams) -> None:
    assert r.counts["steps committed"] > 0
    assert r.counts["turns committed"] > 0
    assert r.steps_per_s > 0 and r.turns_per_s > 0
    assert 0 < r.p50_ms <= r.p99_ms
    assert r.peak_rss_mb > 10
    assert set(r.violations) == set(KINDS)
    broken = {k for k, n in r.violations.items() if n}
    assert broken <= ALLOWED[r.name], r.violations
    # a prompt can only be stored twice by a double submit
    assert r.violations["duplicate_user_messages"] <= r.counts["double submits"]
    assert not r.errors or r.name == "naive", r.errors
    # a system with idempotent submits runs one copy of a double-submitted turn; the others
    # run both, and the steps of the lesser copy do not count as unique
    twice = r.counts["steps done twice"]
    if r.name.startswith("store"):
        assert twice == 0 and r.unique_steps_per_s == r.steps_per_s
    elif r.name in ("raw", "raw-locked") and params.double_submit:
        assert twice > 0 and r.unique_steps_per_s < r.steps_per_s
    assert r.unique_steps_per_s <= r.steps_per_s


@pytest.mark.parametrize(
    "system", ["store", "store-end-apart", "raw", "raw-locked", "naive", "agents-sdk"]
)
async def test_smoke_postgres(system: str, pg_url: str, bench_schemas: SchemaLister) -> None:
    run_id = f"t{os.getpid()}"
    r = await run_system(system, ADAPTERS[system], pg_url, STORM, run_id)
    assert_sane(r, STORM)
    assert r.counts["double submits"] > 0 and sum(r.interrupts.values()) > 0
    assert await bench_schemas(run_id) == []  # dropped at the end


@pytest.mark.parametrize("system", ["store", "store-end-apart", "raw", "raw-locked", "naive"])
async def test_smoke_sqlite(system: str, sqlite_url: str) -> None:
    r = await run_system(system, ADAPTERS[system], sqlite_url, STORM, "t1")
    assert_sane(r, STORM)
    folder = parse_db_url(sqlite_url).sqlite_path
    assert folder is not None
    assert list(Path(folder).parent.iterdir()) == []  # its database files were removed


@pytest.mark.parametrize("system", ["store", "raw-locked", "raw", "agents-sdk"])
async def test_no_violation_without_double_submits_or_interrupts(system: str, pg_url: str) -> None:
    """Turns still race on the 4 conversations (8 workers), but each of these systems writes
    a step in one transaction, so the checker must find nothing at all."""
    r = await run_system(system, ADAPTERS[system], pg_url, CALM, f"c{os.getpid()}")
    assert r.counts["steps committed"] > 20
    assert r.violations == dict.fromkeys(KINDS, 0)
    assert r.counts["rows checked"] > 0


@pytest.mark.parametrize("system", ["store", "raw", "raw-locked", "naive", "agents-sdk"])
@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_preload_is_stored_and_checked(
    system: str, backend: str, pg_url: str, sqlite_url: str
) -> None:
    """--preload writes well-formed history in each system's own format, which the checker
    reads back with the run's rows; the run then appends after it."""
    url = pg_url if backend == "postgres" else sqlite_url
    params = WorkloadParams(
        workers=2, conversations=3, duration=0.5, double_submit=0, interrupt=0, preload=900
    )
    r = await run_system(system, ADAPTERS[system], url, params, f"p{os.getpid()}")
    assert r.counts["rows checked"] >= 900 + r.counts["steps committed"]
    assert "preload" in r.seconds
    assert_sane(r, params)
    if system != "naive":
        assert r.violations == dict.fromkeys(KINDS, 0)


async def test_lock_wait(pg_url: str) -> None:
    """raw-locked measures its waits; raw takes no lock (0); the SDK's row lock is not
    observable (n/a). Hot conversation: one conversation, every turn double-submitted."""
    hot = WorkloadParams(workers=8, conversations=1, duration=1.0, double_submit=1.0, interrupt=0)
    locked = await run_system("raw-locked", ADAPTERS["raw-locked"], pg_url, hot, f"h{os.getpid()}")
    assert locked.lock_wait_reported and locked.p99_lock_wait_ms > 0
    assert locked.violations["duplicate_user_messages"] > 0  # no keys: every turn twice
    raw = await run_system("raw", ADAPTERS["raw"], pg_url, hot, f"h{os.getpid()}")
    assert raw.lock_wait_reported and raw.p99_lock_wait_ms == 0
    sdk = await run_system("agents-sdk", ADAPTERS["agents-sdk"], pg_url, hot, f"h{os.getpid()}")
    assert not sdk.lock_wait_reported


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_the_store_ends_a_turn_in_its_last_steps_write(
    backend: str, pg_url: str, sqlite_url: str
) -> None:
    """Without double submits or interrupts, a store turn is a claim and S writes (the last
    step carries the end); with the end apart, S + 1 writes after the claim. (A waiting
    submit may, rarely, poll once when it learns no holder here at that moment: a write
    more in some hundreds of turns.)"""
    url = pg_url if backend == "postgres" else sqlite_url
    writes = {}
    for system in ("store", "store-end-apart"):
        r = await run_system(system, ADAPTERS[system], url, CALM, f"e{os.getpid()}")
        assert r.counts["turns committed"] == r.counts["turns started"] > 0
        writes[system] = r.counters["writes batched"] / r.counts["turns started"]
    assert 1 + CALM.steps <= writes["store"] < 1.01 + CALM.steps
    assert 2 + CALM.steps <= writes["store-end-apart"] < 2.01 + CALM.steps


async def test_turn_start_shows_the_wait_behind_a_running_turn(pg_url: str) -> None:
    """One conversation, four workers, no double submits: a store turn starts when the one
    before it has ended (its start takes several step writes), where raw starts each turn
    with one write of its own, whatever else runs on the conversation."""
    one = WorkloadParams(workers=4, conversations=1, duration=1.0, double_submit=0, interrupt=0)
    store = await run_system("store", ADAPTERS["store"], pg_url, one, f"s{os.getpid()}")
    raw = await run_system("raw", ADAPTERS["raw"], pg_url, one, f"s{os.getpid()}")
    assert store.p50_start_ms > 2 * store.p50_ms, (store.p50_start_ms, store.p50_ms)
    assert 0 < raw.p50_start_ms < 2 * raw.p50_ms, (raw.p50_start_ms, raw.p50_ms)
    for r in (store, raw):
        assert r.p50_start_ms <= r.p99_start_ms
