"""Markdown tables from benchmark JSON files (``--json``), for the README or a PR.

python -m benchmarks.summary benchmarks/results/postgres.json [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(path: Path) -> str:
    data = json.loads(path.read_text())
    p = data["params"]
    head = (
        f"**{path.stem}** — {p['backend']}, W={p['workers']} C={p['conversations']} "
        f"S={p['steps']} K={p['tool_calls']}, double-submit {p['double_submit']}, "
        f"interrupt {p['interrupt']}, preload {p['preload']}, {p['duration']:g} s per system"
    )
    lines = [
        head,
        "",
        "| system | steps/s | turns/s | p50 ms | p99 ms | p99 lock wait ms | peak RSS MB "
        "| violations | × raw | unique × raw |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    unique = data.get("unique_steps", {})
    unmeasured = set(p.get("lock_wait_unmeasured") or ())
    for name, s in data["systems"].items():
        bad = ", ".join(f"{k} {v}" for k, v in s["violations"].items() if v) or "0"
        lock = "n/a" if name in unmeasured else f"{s['p99_lock_wait_ms']:.1f}"
        lines.append(
            f"| {name} | {s['steps_per_s']:.0f} | {s['turns_per_s']:.0f} | {s['p50_ms']:.1f} "
            f"| {s['p99_ms']:.1f} | {lock} | {s['peak_rss_mb']:.0f} | {bad} "
            f"| {s['ratio_to_raw']:.2f} | {_ratio(unique.get(name))} |"
        )
    return "\n".join(lines)


def _ratio(entry: dict[str, float] | None) -> str:
    return f"{entry['ratio_to_raw']:.2f}" if entry else "-"


def main(argv: list[str] | None = None) -> int:
    for arg in argv if argv is not None else sys.argv[1:]:
        print(table(Path(arg)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
