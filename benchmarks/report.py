"""The run's results as a rich table on the terminal and as JSON (``--json``); the PNG chart
is ``benchmarks.chart``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .runner import BenchReport
from .system_run import SystemResult

SHORT = {
    "orphan_results": "orphans",
    "unanswered_calls": "unanswered",
    "misplaced_results": "misplaced",
    "duplicate_results": "dup results",
    "duplicate_calls": "dup calls",
    "duplicate_user_messages": "dup prompts",
    "lost_steps": "lost steps",
    "duplicated_steps": "dup steps",
    "position_gaps": "gaps",
}


def report_json(report: BenchReport) -> dict[str, Any]:
    """``{"params", "machine", "systems"}``, plus ``"cpu_us_per_step"`` ({system: {"process",
    "database"}}), ``"unique_steps"`` ({system: {"steps_per_s", "ratio_to_raw"}}: without
    the steps a double submit made twice), ``"turn_start"`` ({system: {"p50_ms",
    "p99_ms"}}: begin_turn until the turn may run) and ``"sweep"`` ({W: systems}) with --sweep."""
    out: dict[str, Any] = {
        "params": report.params_json(),
        "machine": report.machine,
        "systems": {name: r.json_entry() for name, r in report.main.items()},
    }
    out["cpu_us_per_step"] = {name: r.cpu_us_per_step for name, r in report.main.items()}
    out["unique_steps"] = {
        name: {
            "steps_per_s": round(r.unique_steps_per_s, 3),
            "ratio_to_raw": round(r.unique_ratio_to_raw, 3),
        }
        for name, r in report.main.items()
    }
    out["turn_start"] = {
        name: {"p50_ms": round(r.p50_start_ms, 3), "p99_ms": round(r.p99_start_ms, 3)}
        for name, r in report.main.items()
    }
    if report.config.sweep:
        out["sweep"] = {
            str(w): {name: r.json_entry() for name, r in group.items()}
            for w, group in sorted(report.results.items())
        }
    if report.failures:
        out["params"]["failures"] = report.failures
    if report.skipped:
        out["params"]["skipped"] = report.skipped
    return out


def write_json(report: BenchReport, path: Path) -> None:
    path.write_text(json.dumps(report_json(report), indent=2) + "\n")


def violations_text(violations: dict[str, int]) -> str:
    parts = [f"{SHORT.get(k, k)} {n}" for k, n in violations.items() if n]
    return "\n".join(parts) if parts else "0"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def results_table(title: str, results: dict[str, SystemResult]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("system", "steps/s", "turns/s", "p50 ms", "p99 ms", "p99 lock ms", "peak RSS MB"):
        t.add_column(col, justify="left" if col == "system" else "right")
    t.add_column("violations")
    t.add_column("× raw", justify="right")
    t.add_column("unique\n× raw", justify="right")
    for name, r in results.items():
        t.add_row(
            name,
            f"{r.steps_per_s:.0f}",
            f"{r.turns_per_s:.0f}",
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            _ms(r.p99_lock_wait_ms) if r.lock_wait_reported else "n/a",
            f"{r.peak_rss_mb:.0f}",
            violations_text(r.violations),
            f"{r.ratio_to_raw:.2f}" if r.ratio_to_raw else "-",
            f"{r.unique_ratio_to_raw:.2f}" if r.unique_ratio_to_raw else "-",
        )
    return t


def details_table(results: dict[str, SystemResult]) -> Table:
    """Counts behind the rates: what the driver did and what went wrong on the way."""
    t = Table(title="details", title_justify="left")
    for col in (
        "system", "steps", "steps done twice", "turns", "double submits", "dup refused",
        "interrupts",
    ):  # fmt: skip
        t.add_column(col, justify="left" if col == "system" else "right")
    t.add_column("turn start ms\np50 / p99", justify="right")
    t.add_column("CPU µs/step\nprocess + db", justify="right")
    t.add_column("errors / notes")
    for name, r in results.items():
        c = r.counts
        interrupts = ", ".join(f"{k} {n}" for k, n in sorted(r.interrupts.items()))
        notes = [f"{k} {n}" for k, n in sorted({**r.errors, **r.counters}.items())]
        if c.get("busy refused"):
            notes.append(f"busy refused {c['busy refused']}")
        t.add_row(
            name,
            str(c.get("steps committed", 0)),
            str(c.get("steps done twice", 0)),
            f"{c.get('turns committed', 0)}/{c.get('turns started', 0)}",
            str(c.get("double submits", 0)),
            str(c.get("duplicates refused", 0)),
            interrupts or "0",
            f"{_ms(r.p50_start_ms)} / {_ms(r.p99_start_ms)}",
            _cpu_text(r.cpu_us_per_step),
            "\n".join(notes) or "-",
        )
    return t


def _cpu_text(cpu: dict[str, float]) -> str:
    if "process" not in cpu:
        return "n/a"
    if "database" not in cpu:
        return f"{cpu['process']:.0f}"
    return f"{cpu['process']:.0f} + {cpu['database']:.0f}"


def print_report(report: BenchReport, console: Console) -> None:
    p = report.config.params
    head = (
        f"{report.params_json()['backend']}  W={p.workers} C={p.conversations} S={p.steps} "
        f"K={p.tool_calls}  double-submit {p.double_submit}  interrupt {p.interrupt}  "
        f"think {p.think_ms} ms  preload {p.preload}  {p.duration:g} s per system"
    )
    for w, group in sorted(report.results.items()):
        title = head if not report.config.sweep else f"{head}  [sweep: W={w}]"
        console.print(results_table(title, group))
    console.print(
        "unique × raw: the ratio of steps/s without the steps that a double submit made "
        "twice (details: steps done twice); systems without idempotent submits run both copies"
    )
    console.print(details_table(report.main))
    for method in report.params_json()["rss_method"]:
        console.print(f"peak RSS: {method}")
    for label, why in report.skipped.items():
        console.print(f"[yellow]{label} skipped:[/yellow] {why}")
    for label, err in report.failures.items():
        console.print(f"[red]{label} failed:[/red] {err}")
