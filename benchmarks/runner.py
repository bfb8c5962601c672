"""One benchmark run: every selected system one after another (at each W of a sweep), against
the same database server, each with fresh tables, under a rich progress bar."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .adapters import ADAPTERS, UnsupportedBackend, factory_ref
from .dbtarget import parse_db_url
from .isolate import SystemFailed, run_isolated
from .system_run import SystemResult, run_system
from .workload import WorkloadParams

SWEEP_WORKERS = (1, 4, 16, 64)
BASELINE = "raw"


@dataclass(slots=True)
class BenchConfig:
    url: str
    systems: list[str]
    params: WorkloadParams
    sweep: bool = False
    in_process: bool = False


@dataclass(slots=True)
class BenchReport:
    config: BenchConfig
    machine: dict[str, Any]
    # results[workers][system]
    results: dict[int, dict[str, SystemResult]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # UnsupportedBackend

    @property
    def main(self) -> dict[str, SystemResult]:
        """The results at ``--workers`` (or, in a sweep without that W, the largest W)."""
        if not self.results:
            return {}
        return self.results.get(self.config.params.workers) or self.results[max(self.results)]

    def params_json(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = asdict(c.params)
        out.update(
            backend=parse_db_url(c.url).backend,
            systems=c.systems,
            pool_size=c.params.effective_pool_size(),
            sweep_workers=list(SWEEP_WORKERS) if c.sweep else None,
            rss_method=sorted({s.rss_method for r in self.results.values() for s in r.values()}),
            ratio_base=BASELINE if any(BASELINE in r for r in self.results.values()) else None,
            lock_wait_unmeasured=sorted(
                {n for r in self.results.values() for n, s in r.items() if not s.lock_wait_reported}
            ),
        )
        return out


def run_benchmark(config: BenchConfig, console: Console) -> BenchReport:
    report = BenchReport(config, machine_info(config.url))
    run_id = str(os.getpid())
    sweep = SWEEP_WORKERS if config.sweep else (config.params.workers,)
    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.fields[phase]:<8} {task.fields[steps]:>8} steps"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        for workers in sweep:
            params = replace(config.params, workers=workers)
            for name in config.systems:
                label = f"{name} W={workers}" if config.sweep else name
                task = bar.add_task(label, total=params.duration, phase="wait", steps=0)

                def progress(
                    phase: str,
                    seconds: float,
                    steps: int,
                    task: Any = task,
                    total: float = params.duration,
                ) -> None:
                    done = {"setup": 0.0, "preload": 0.0, "run": min(seconds, total)}.get(
                        phase, total
                    )
                    fields: dict[str, Any] = {"phase": phase}
                    if phase in ("run", "check"):
                        fields["steps"] = steps
                    bar.update(task, completed=done, **fields)

                rid = f"{run_id}_w{workers}" if config.sweep else run_id
                try:
                    result = _run_one(name, config, params, rid, progress)
                except UnsupportedBackend as exc:
                    report.skipped[label] = str(exc) or "does not run on this database"
                    bar.update(task, phase="skipped")
                    continue
                except Exception as exc:
                    report.failures[label] = f"{type(exc).__name__}: {exc}"
                    bar.update(task, phase="FAILED")
                    continue
                bar.update(task, completed=params.duration, phase="done")
                report.results.setdefault(workers, {})[name] = result
    for group in report.results.values():
        base = group.get(BASELINE)
        for r in group.values():
            r.ratio_to_raw = r.steps_per_s / base.steps_per_s if base and base.steps_per_s else 0.0
            r.unique_ratio_to_raw = (
                r.unique_steps_per_s / base.unique_steps_per_s
                if base and base.unique_steps_per_s
                else 0.0
            )
    return report


def _run_one(
    name: str, config: BenchConfig, params: WorkloadParams, run_id: str, progress: Any
) -> SystemResult:
    factory = ADAPTERS[name]
    ref = None if config.in_process else factory_ref(factory)
    if ref is not None:
        try:
            return run_isolated(name, ref, config.url, params, run_id, progress)
        except SystemFailed as exc:
            raise RuntimeError(str(exc)) from None
    return anyio.run(run_system, name, factory, config.url, params, run_id, progress)


def machine_info(url: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    target = parse_db_url(url)
    if target.backend == "postgres":
        info["database"] = anyio.run(_pg_version, target.asyncpg_dsn)
    else:
        info["database"] = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"
    return info


async def _pg_version(dsn: str | None) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT version()")).split(" on ")[0]
    finally:
        await conn.close()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
