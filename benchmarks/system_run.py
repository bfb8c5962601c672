"""One system, end to end, in this process: fresh tables, optional preload, the timed run, the
checker pass over what the system stored, and teardown (always)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from . import cpu
from .adapters import AdapterFactory
from .adapters.base import AdapterOptions
from .checker import check
from .dbtarget import parse_db_url, schema_name
from .driver import Driver
from .metrics import RunStats, peak_rss_mb, percentile, reset_peak_rss
from .workload import PayloadPool, WorkloadParams, conversation_ids, preload_turns

# phase ("setup", "preload", "run", "check", "teardown"), seconds into the phase, steps so far
Progress = Callable[[str, float, int], None]


@dataclass(slots=True)
class SystemResult:
    name: str
    workers: int
    steps_per_s: float = 0.0
    turns_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p99_lock_wait_ms: float = 0.0
    #: turn-start latency (begin_turn until the turn may run): a system that runs one turn
    #: at a time per conversation makes a turn wait here for the one before it
    p50_start_ms: float = 0.0
    p99_start_ms: float = 0.0
    lock_wait_reported: bool = False
    peak_rss_mb: float = 0.0
    rss_method: str = ""
    violations: dict[str, int] = field(default_factory=dict)
    ratio_to_raw: float = 0.0
    #: steps/s without the steps that a double submit made twice (a system that runs both
    #: copies of a double-submitted turn does its work twice: that is the bug, not output)
    unique_steps_per_s: float = 0.0
    unique_ratio_to_raw: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    interrupts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: CPU time per committed step, microseconds: "process" (the system's client side, all
    #: threads) and "database" (its PostgreSQL backends), absent where unknown
    cpu_us_per_step: dict[str, float] = field(default_factory=dict)

    def json_entry(self) -> dict[str, Any]:
        """This system's entry in the ``--json`` report (exactly these keys)."""
        return {
            "steps_per_s": round(self.steps_per_s, 3),
            "turns_per_s": round(self.turns_per_s, 3),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "p99_lock_wait_ms": round(self.p99_lock_wait_ms, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "violations": dict(self.violations),
            "ratio_to_raw": round(self.ratio_to_raw, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SystemResult:
        return cls(**d)


async def run_system(
    name: str,
    factory: AdapterFactory,
    url: str,
    params: WorkloadParams,
    run_id: str,
    progress: Progress | None = None,
    process: str = "the shared benchmark process",
) -> SystemResult:
    """Run ``name``. Its peak RSS is this process's peak during the timed run: the peak is
    reset after setup and preload and read before the checker pass (Linux), so neither the
    preload nor the checker counts. ``process`` says which process that is, for the report."""
    target = parse_db_url(url)
    adapter = factory(AdapterOptions(target.backend, params.effective_pool_size()))
    schema = schema_name(name, run_id)
    result = SystemResult(name=name, workers=params.workers)
    notify = progress or (lambda phase, seconds, steps: None)
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[phase] = round(now - clock, 3)
        clock = now

    def tick(stats: RunStats, seconds: float) -> None:
        notify("run", seconds, stats.steps_committed)

    try:
        notify("setup", 0.0, 0)
        await adapter.setup(url, schema)
        lap("setup")
        if params.preload:
            notify("preload", 0.0, 0)
            await adapter.preload(preload_turns(params))
            lap("preload")
        driver = Driver(
            adapter, params, conversation_ids(params), PayloadPool(params.seed), on_tick=tick
        )
        reset = reset_peak_rss()
        dsn = target.asyncpg_dsn if target.backend == "postgres" else None
        cpu_before = await cpu.sample(dsn)
        stats = await driver.run()
        cpu_use = cpu.used(cpu_before, await cpu.sample(dsn))
        result.peak_rss_mb = peak_rss_mb()
        result.rss_method = f"peak RSS of {process} during the timed run" + (
            " (reset after setup and preload)" if reset else " (since the process started)"
        )
        lap("run")
        notify("check", 0.0, stats.steps_committed)
        rows = await adapter.read_back()
        result.violations = check(rows, stats.ledger, positions=adapter.stores_positions)
        result.counts["rows checked"] = len(rows)
        lap("check")
    finally:
        notify("teardown", 0.0, 0)
        with anyio.CancelScope(shield=True):
            await adapter.teardown()

    result.steps_per_s = stats.rate(stats.steps_in_window)
    result.unique_steps_per_s = stats.rate(stats.steps_in_window - stats.duplicated_steps_in_window)
    result.turns_per_s = stats.rate(stats.turns_in_window)
    result.p50_ms = percentile(stats.step_ms, 50)
    result.p99_ms = percentile(stats.step_ms, 99)
    result.p50_start_ms = percentile(stats.start_ms, 50)
    result.p99_start_ms = percentile(stats.start_ms, 99)
    result.lock_wait_reported = adapter.reports_lock_wait
    result.p99_lock_wait_ms = percentile(adapter.lock_waits_ms, 99)
    result.counts.update(
        {
            "steps committed": stats.steps_committed,
            "turns committed": stats.turns_committed,
            "turns started": stats.turns_started,
            "double submits": stats.double_submits,
            "steps done twice": stats.duplicated_steps_in_window,
            "duplicates refused": stats.duplicates_refused,
            "busy refused": stats.busy_refused,
        }
    )
    if cpu_use is not None and stats.steps_committed:
        result.cpu_us_per_step["process"] = round(cpu_use.process / stats.steps_committed * 1e6)
        if cpu_use.database is not None:
            per_step = cpu_use.database / stats.steps_committed * 1e6
            result.cpu_us_per_step["database"] = round(per_step)
    result.interrupts = dict(stats.interrupts)
    result.errors = dict(stats.errors)
    result.counters = dict(adapter.counters)
    return result
