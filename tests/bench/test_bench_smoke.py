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
    "agents-sdk-turnstore": set(),
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
    if r.name.startswith("store") or r.name == "agents-sdk-turnstore":
        assert twice == 0 and r.unique_steps_per_s == r.steps_per_s
    elif r.name in ("raw", "raw-locked") and params.double_submit:
        assert twice > 0 and r.unique_steps_per_s < r.steps_per_s
    assert r.unique_steps_per_s <= r.steps_per_s


@pytest.mark.parametrize(
    "system",
    [
        "store",
        "store-end-apart",
        "raw",
        "raw-locked",
        "naive",
        "agents-sdk",
        "agents-sdk-turnstore",
    ],
)
async def test_smoke_postgres(system: str, pg_url: str, bench_schemas: SchemaLister) -> None:
    run_id = f"t{os.getpid()}"
    r = await run_system(system, ADAPTERS[system], pg_url, STORM, run_id)
    assert_sane(r, STORM)
    assert r.counts["double submits"] > 0 and sum(r.interrupts.values()) > 0
    assert await bench_schemas(run_id) == []  # dropped at the end


@pytest.mark.parametrize(
    "system", ["store", "store-end-apart", "raw", "raw-locked", "naive", "agents-sdk-turnstore"]
)
async def test_smoke_sqlite(system: str, sqlite_url: str) -> None:
    r = await run_system(system, ADAPTERS[system], sqlite_url, STORM, "t1")
    assert_sane(r, STORM)
    folder = parse_db_url(sqlite_url).sqlite_path
    assert folder is not None
    assert list(Path(folder).parent.iterdir()) == []  # its database files were removed


@pytest.mark.parametrize(
    "system", ["store", "raw-locked", "raw", "agents-sdk", "agents-sdk-turnstore"]
)
async def test_no_violation_without_double_submits_or_interrupts(system: str, pg_url: str) -> None:
    """Turns still race on the 4 conversations (8 workers), but each of these systems writes
    a step in one transaction, so the checker must find nothing at all."""
    r = await run_system(system, ADAPTERS[system], pg_url, CALM, f"c{os.getpid()}")
    assert r.counts["steps committed"] > 0  # how many fit in the second is the machine's
    assert r.violations == dict.fromkeys(KINDS, 0)
    assert r.counts["rows checked"] > 0


@pytest.mark.parametrize(
    "system", ["store", "raw", "raw-locked", "naive", "agents-sdk", "agents-sdk-turnstore"]
)
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


# one worker, so no turn ever waits for another: every write a turn makes is its own
SOLO = WorkloadParams(
    workers=1, conversations=2, steps=2, tool_calls=3, duration=0.5,
    double_submit=0.0, interrupt=0.0, seed=13,
)  # fmt: skip


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_the_store_ends_a_turn_in_its_last_steps_write(
    backend: str, pg_url: str, sqlite_url: str
) -> None:
    """A store turn is a claim and S writes (the last step carries the end); with the end
    apart, a claim and S + 1 writes. One worker runs its turns one after the other, so no
    submit waits, polls or rides in another turn's write: the count is exact, whatever the
    machine's speed (how many turns fit in the run is not, and is not asserted)."""
    url = pg_url if backend == "postgres" else sqlite_url
    for system, per_turn in (("store", 1 + SOLO.steps), ("store-end-apart", 2 + SOLO.steps)):
        r = await run_system(system, ADAPTERS[system], url, SOLO, f"e{os.getpid()}")
        turns = r.counts["turns started"]
        assert r.counts["turns committed"] == turns > 0
        assert r.counts["steps committed"] == SOLO.steps * turns
        assert r.counters["writes batched"] == per_turn * turns, (system, r.counters, turns)
        assert r.violations == dict.fromkeys(KINDS, 0)


async def test_turn_start_latency_is_reported(pg_url: str) -> None:
    """Every turn's start (begin_turn until the turn may run) is timed: one write at least,
    so above zero. How a store turn's start compares with raw's (it waits for the turn
    before it on its conversation) is a measurement that moves with the machine's load: the
    benchmark reports it (``turn_start`` in its JSON, benchmarks/results), a test does not
    assert it."""
    one = WorkloadParams(workers=4, conversations=1, duration=1.0, double_submit=0, interrupt=0)
    for system in ("store", "raw"):
        r = await run_system(system, ADAPTERS[system], pg_url, one, f"s{os.getpid()}")
        assert r.counts["turns started"] > 0
        assert 0 < r.p50_start_ms <= r.p99_start_ms, (system, r.p50_start_ms, r.p99_start_ms)
