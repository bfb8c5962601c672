"""What the soak shows: a progress display while it runs (``rich`` if it is installed and
the output is a terminal, else a plain line every few seconds), and the table and JSON of
the result."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

PLAIN_EVERY_SECONDS = 5.0


@dataclass
class Progress:
    """One look at a running soak."""

    phase: str
    elapsed: float
    duration: float
    workers_running: int
    workers_stopped: int
    workers_started: int
    faults: dict[str, int]
    last_fault: str
    records: dict[str, int]
    expected: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        r = self.records
        faults = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        errors = " ".join(f"{k}={v}" for k, v in sorted(self.expected.items())) or "none"
        return (
            f"[soak {self.elapsed:5.1f}/{self.duration:.0f}s {self.phase}] "
            f"workers {self.workers_running} running, {self.workers_stopped} stopped; "
            f"turns {r.get('claim', 0) - r.get('duplicate', 0)} dup {r.get('duplicate', 0)} "
            f"steps {r.get('step', 0)} ckpt {r.get('ckpt', 0)} "
            f"cancelled {r.get('cancelled', 0)} unexpected {r.get('unexpected', 0)}; "
            f"faults {faults}; expected errors {errors}"
        )


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class Display(AbstractContextManager["Display"]):
    """Shows ``Progress`` as it comes: a live panel on a terminal with ``rich``, else a
    plain line every ``PLAIN_EVERY_SECONDS``."""

    def __init__(self, *, plain: bool | None = None) -> None:
        self._plain = (
            plain if plain is not None else not (_rich_available() and sys.stdout.isatty())
        )
        self._live: Any = None
        self._last_line = 0.0

    def __enter__(self) -> Display:
        if not self._plain:
            from rich.live import Live

            self._live = Live(refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def show(self, progress: Progress, *, force: bool = False) -> None:
        if self._live is not None:
            self._live.update(_panel(progress))
            return
        now = time.monotonic()
        if force or now - self._last_line >= PLAIN_EVERY_SECONDS:
            self._last_line = now
            print(progress.line(), flush=True)


def _panel(p: Progress) -> Any:
    from rich.table import Table

    table = Table(title=f"turnstore soak: {p.phase}", show_header=False, expand=False)
    table.add_column(style="bold")
    table.add_column()
    r = p.records
    table.add_row("elapsed", f"{p.elapsed:.1f} / {p.duration:.0f} s")
    table.add_row(
        "workers",
        f"{p.workers_running} running, {p.workers_stopped} stopped, {p.workers_started} started",
    )
    table.add_row(
        "acknowledged",
        f"{r.get('claim', 0) - r.get('duplicate', 0)} turns, {r.get('duplicate', 0)} "
        f"duplicate submits, {r.get('step', 0)} steps, {r.get('ckpt', 0)} checkpointed "
        f"results, {r.get('finish', 0)} finishes",
    )
    table.add_row("cancelled", str(r.get("cancelled", 0)))
    table.add_row("faults", " ".join(f"{k} {v}" for k, v in sorted(p.faults.items())) or "none yet")
    table.add_row("last fault", p.last_fault or "-")
    table.add_row(
        "expected errors",
        " ".join(f"{k} {v}" for k, v in sorted(p.expected.items())) or "none",
    )
    unexpected = r.get("unexpected", 0)
    table.add_row("unexpected errors", f"[red]{unexpected}[/red]" if unexpected else "0")
    return table


# --- the result ---------------------------------------------------------------------------

SUMMARY_ROWS: list[tuple[str, str]] = [
    ("backend", "backend"),
    ("duration (s)", "duration"),
    ("workers (started in all)", "workers_line"),
    ("turns started", "turns"),
    ("duplicate submits answered", "duplicates"),
    ("steps acknowledged", "steps"),
    ("results checkpointed", "checkpointed_results"),
    ("turns finished", "finishes"),
    ("turns cancelled on purpose", "cancelled"),
    ("faults", "faults_line"),
    ("recoveries (turns taken over)", "recoveries"),
    ("recovered steps / results", "recovered_line"),
    ("expected errors", "expected_line"),
    ("OutcomeUnknown (then answered by a repeat)", "unknown_line"),
    ("unexpected errors", "unexpected_errors"),
    ("worker crashes", "worker_crashes"),
    ("lost acknowledged steps", "lost_acknowledged_steps"),
    ("lost checkpointed results", "lost_checkpointed_results"),
    ("stuck conversations", "stuck_conversations"),
    ("violations", "violations"),
]


def _lines(result: dict[str, Any]) -> dict[str, Any]:
    out = dict(result)
    out["workers_line"] = f"{result['workers']} ({result['workers_started']})"
    out["faults_line"] = " ".join(f"{k} {v}" for k, v in sorted(result["faults"].items())) or "none"
    out["unknown_line"] = f"{result['outcome_unknown']} ({result['outcome_unknown_answered']})"
    out["recovered_line"] = f"{result['recovered_steps']} / {result['recovered_results']}"
    out["expected_line"] = (
        " ".join(f"{k} {v}" for k, v in sorted(result["expected_errors"].items())) or "none"
    )
    return out


def print_summary(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """The result as a table (``rich`` if installed), and the first violations."""
    lines = _lines(result)
    verdict = "PASS" if result["ok"] else "FAIL"
    if _rich_available():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"turnstore soak: {verdict}", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for label, key in SUMMARY_ROWS:
            table.add_row(label, str(lines[key]))
        console = Console(width=max(100, Console().width))
        console.print(table)
    else:
        out(f"turnstore soak: {verdict}")
        for label, key in SUMMARY_ROWS:
            out(f"  {label:<40} {lines[key]}")
    for v in result["violation_samples"][:20]:
        out(f"  VIOLATION {v['kind']}: {v.get('conversation', '')} {v['detail']}")
    if result["violations"] > 20:
        out(f"  ... {result['violations'] - 20} more violations (see --json)")
    if result.get("kept"):
        out(f"  logs and database kept for inspection: {result['kept']}")


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
