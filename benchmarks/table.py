"""The results table of a run, in one place: its columns and each system's cells, from a
run's JSON entries (``report.report_json``). ``report`` prints it on the terminal (rich),
``summary`` as Markdown for the docs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLUMNS = ("system", "steps/s", "turns/s", "p50 ms", "p99 ms", "p99 lock wait ms",
           "peak RSS MB", "violations", "× raw", "unique × raw")  # fmt: skip
#: the columns aligned left; the others hold figures
TEXT_COLUMNS = frozenset({"system", "violations"})


def load_text(params: Mapping[str, Any]) -> str:
    """The run's load in one line, from its JSON ``params``."""
    return (
        f"{params['backend']}, W={params['workers']} C={params['conversations']} "
        f"S={params['steps']} K={params['tool_calls']}, double-submit {params['double_submit']}, "
        f"interrupt {params['interrupt']}, think {params.get('think_ms', 0.0)} ms, "
        f"preload {params['preload']}, {params['duration']:g} s per system"
    )


def ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _ratio(x: float | None) -> str:
    return f"{x:.2f}" if x else "-"


def rows(data: Mapping[str, Any]) -> list[list[str]]:
    """One row of cells a system, in ``COLUMNS`` order, from a run's JSON (its ``params``,
    ``systems`` and ``unique_steps``). A violations cell holds one line a kind seen, "0"
    for none."""
    unique = data.get("unique_steps", {})
    unmeasured = set(data["params"].get("lock_wait_unmeasured") or ())
    out = []
    for name, s in data["systems"].items():
        bad = "\n".join(f"{k} {v}" for k, v in s["violations"].items() if v) or "0"
        unique_ratio = unique[name]["ratio_to_raw"] if name in unique else None
        out.append([
            name, f"{s['steps_per_s']:.0f}", f"{s['turns_per_s']:.0f}", ms(s["p50_ms"]),
            ms(s["p99_ms"]), "n/a" if name in unmeasured else ms(s["p99_lock_wait_ms"]),
            f"{s['peak_rss_mb']:.0f}", bad, _ratio(s["ratio_to_raw"]), _ratio(unique_ratio),
        ])  # fmt: skip
    return out


def markdown(data: Mapping[str, Any], title: str) -> str:
    """The table in Markdown under a line naming ``title`` and the load."""
    lines = [
        f"**{title}** — {load_text(data['params'])}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in COLUMNS) + "|",
    ]
    for cells in rows(data):
        lines.append("| " + " | ".join(c.replace("\n", ", ") for c in cells) + " |")
    return "\n".join(lines)
