"""The run's results on the terminal (rich: ``benchmarks.table``'s results table, and the
details) and as JSON (``--json``); the PNG chart is ``benchmarks.chart``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import table
from .runner import BenchReport
from .system_run import SystemResult


def report_json(report: BenchReport) -> dict[str, Any]:
    """``{"params", "machine", "systems"}``, plus ``"cpu_us_per_step"`` ({system: {"process",
    "database"}}), ``"unique_steps"`` ({system: {"steps_per_s", "ratio_to_raw"}}: without
    the steps a double submit made twice), ``"turn_start"`` ({system: {"p50_ms",
    "p99_ms"}}: begin_turn until the turn may run) and ``"sweep"`` ({W: systems}) with --sweep."""
    main = _group_json(report, report.main)
    out: dict[str, Any] = {
        "params": main["params"],
        "machine": report.machine,
        "systems": main["systems"],
    }
    out["cpu_us_per_step"] = {name: r.cpu_us_per_step for name, r in report.main.items()}
    out["unique_steps"] = main["unique_steps"]
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


def _group_json(report: BenchReport, group: dict[str, SystemResult]) -> dict[str, Any]:
    """``{"params", "systems", "unique_steps"}`` of one group of results (one W)."""
    return {
        "params": report.params_json(),
        "systems": {name: r.json_entry() for name, r in group.items()},
        "unique_steps": {
            name: {
                "steps_per_s": round(r.unique_steps_per_s, 3),
                "ratio_to_raw": round(r.unique_ratio_to_raw, 3),
            }
            for name, r in group.items()
        },
    }


def write_json(report: BenchReport, path: Path) -> None:
    path.write_text(json.dumps(report_json(report), indent=2) + "\n")


def results_table(title: str, data: dict[str, Any]) -> Table:
    """``table``'s rows, from one group's JSON (``_group_json``), on the terminal."""
    t = Table(title=title, title_justify="left")
    for col in table.COLUMNS:
        t.add_column(col, justify="left" if col in table.TEXT_COLUMNS else "right")
    for cells in table.rows(data):
        t.add_row(*cells)
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
            f"{table.ms(r.p50_start_ms)} / {table.ms(r.p99_start_ms)}",
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
    head = table.load_text(report.params_json())
    for w, group in sorted(report.results.items()):
        data = _group_json(report, group)
        title = head if not report.config.sweep else f"{head}  [sweep: W={w}]"
        console.print(results_table(title, data))
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
