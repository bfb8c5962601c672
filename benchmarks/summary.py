"""Markdown tables from benchmark JSON files (``--json``), for the README or a PR.

python -m benchmarks.summary benchmarks/results/postgres.json [...]
python -m benchmarks.summary --ratios [--base SYSTEM] RUN1.json RUN2.json RUN3.json

``--ratios`` compares runs of the same load: for each system, its steps/s over raw's (or
``--base``'s) in each run, then their median and range. On a shared machine one run's
ratio moves with the machine's other load (a system runs while another tenant is busy,
the next while it is not); the median of runs in alternating order is the figure to quote.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from .table import markdown


def table(path: Path) -> str:
    """The results table of the run in ``path`` (``--json``), in Markdown."""
    return markdown(json.loads(path.read_text()), path.stem)


def ratios(paths: list[Path], base: str = "raw") -> str:
    """Each system's steps/s over ``base``'s (then unique steps/s over ``base``'s) in each
    run, and the median and range over the runs. Refuses runs of different loads, or
    without ``base``."""
    runs = [json.loads(p.read_text()) for p in paths]
    load = [_load(r["params"]) for r in runs]
    if any(x != load[0] for x in load[1:]):
        raise ValueError("the runs are not of the same load: " + "; ".join(map(str, load)))
    for path, run in zip(paths, runs, strict=True):
        if not run["systems"].get(base, {}).get("steps_per_s"):
            raise ValueError(f"{path}: no {base} in it")
    names = list(dict.fromkeys(n for r in runs for n in r["systems"]))
    header = " | ".join(p.stem for p in paths)
    lines = [
        f"| × {base} | {header} | median | range | unique: median | range |",
        "|---|" + "---:|" * (len(paths) + 4),
    ]
    for name in names:
        plain = [_over(r.get("systems", {}), name, base) for r in runs]
        unique = [_over(r.get("unique_steps", {}), name, base) for r in runs]
        cells = [f"{x:.2f}" if x is not None else "-" for x in plain]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {_median(plain)} | {_range(plain)} "
            f"| {_median(unique)} | {_range(unique)} |"
        )
    return "\n".join(lines)


def _over(entries: dict[str, Any], name: str, base: str) -> float | None:
    if name not in entries or not entries.get(base, {}).get("steps_per_s"):
        return None
    return float(entries[name]["steps_per_s"]) / float(entries[base]["steps_per_s"])


def _load(params: dict[str, object]) -> tuple[object, ...]:
    keys = ("backend", "workers", "conversations", "steps", "tool_calls", "double_submit",
            "interrupt", "think_ms", "preload", "duration")  # fmt: skip
    return tuple(params.get(k) for k in keys)


def _median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.2f}" if known else "-"


def _range(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{min(known):.2f}–{max(known):.2f}" if known else "-"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["--ratios"]:
        base, files = "raw", args[1:]
        if files[:1] == ["--base"]:
            base, files = files[1], files[2:]
        print(ratios([Path(a) for a in files], base))
        return 0
    for arg in args:
        print(table(Path(arg)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
