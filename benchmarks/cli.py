"""``bench``: the load benchmark's command line.

    python -m benchmarks [bench] --db URL [--systems raw,raw-locked,naive,agents-sdk]
        [--workers W --conversations C --steps S --tool-calls K --duration SECONDS
         --double-submit RATE --interrupt RATE --think-ms MS --preload N --seed N
         --pool-size N --json FILE --chart FILE --sweep --in-process --http]

Every system runs in its own child process by default (its peak RSS is then its own);
``--in-process`` runs them all in this process (faster to start; the peak RSS of each then
includes what earlier systems left in the process).
``--http`` runs the same workload through the HTTP service too (``store-http``: ``python -m
store serve`` in a process of its own, driven with httpx) beside the library in process
(``store``), and prints the ratio of their steps/s.
Exit status: 0 if every system ran, 1 if one failed, 2 for bad arguments.

    python -m benchmarks [bench] profile PROBE [--db URL] [options]

runs one of the profiling probes instead (``benchmarks.profile``: where a step's time goes).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from .adapters import ADAPTERS
from .dbtarget import DEFAULT_DB, parse_db_url
from .runner import BenchConfig, run_benchmark
from .workload import WorkloadParams


def _rate(text: str) -> float:
    x = float(text)
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return x


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        x = int(text)
        if x < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        return x

    return parse


def _positive(text: str) -> float:
    x = float(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return x


def build_parser() -> argparse.ArgumentParser:
    d = WorkloadParams()
    p = argparse.ArgumentParser(
        prog="bench",
        description="Load benchmark of concurrent agent turns with double submits and "
        "interruptions, with an independent checker pass after each system.",
        epilog="`bench profile PROBE` runs one of the profiling probes instead "
        "(bench profile -h lists them).",
    )
    p.add_argument(
        "--db",
        default=os.environ.get("STORE_PG_URL", DEFAULT_DB),
        help="postgresql://... or sqlite:///file.db (default: $STORE_PG_URL or %(default)s)",
    )
    p.add_argument(
        "--systems",
        default=",".join(ADAPTERS),
        help="comma-separated names of registered systems (default: all: %(default)s)",
    )
    p.add_argument("--workers", "-W", type=_at_least(1), default=d.workers)
    p.add_argument("--conversations", "-C", type=_at_least(1), default=d.conversations)
    p.add_argument("--steps", "-S", type=_at_least(0), default=d.steps)
    p.add_argument("--tool-calls", "-K", type=_at_least(0), default=d.tool_calls)
    p.add_argument("--duration", type=_positive, default=d.duration, help="seconds per system")
    p.add_argument("--double-submit", type=_rate, default=d.double_submit)
    p.add_argument("--interrupt", type=_rate, default=d.interrupt)
    p.add_argument(
        "--think-ms",
        type=float,
        default=d.think_ms,
        help="mean model latency per step and mean tool duration",
    )
    p.add_argument(
        "--preload",
        type=_at_least(0),
        default=d.preload,
        help="messages stored before the run, over the conversations",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--pool-size",
        type=_at_least(0),
        default=0,
        help="connections per system (default min(2W, 32))",
    )
    p.add_argument("--json", type=Path, help="write the results as JSON")
    p.add_argument("--chart", type=Path, help="write a PNG chart")
    p.add_argument("--sweep", action="store_true", help="steps/s against W in 1, 4, 16, 64")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every system in this process (peak RSS then includes what earlier systems "
        "left in it)",
    )
    p.add_argument(
        "--http",
        action="store_true",
        help="also run the workload through the HTTP service (store-http) beside the "
        "in-process store, and print the ratio of their steps/s",
    )
    return p


def _register_http() -> None:
    from .adapters.store_http import make_store_http

    ADAPTERS.setdefault("store-http", make_store_http)


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["bench"]:
        args_in = args_in[1:]
    if args_in[:1] == ["profile"]:
        from .profile import main as profile_main

        return profile_main(args_in[1:], prog="bench profile")
    parser = build_parser()
    try:
        args = parser.parse_args(args_in)
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        _register_http()  # not in the default systems: it needs the server extra
        if args.http:
            systems += [name for name in ("store", "store-http") if name not in systems]
        unknown = [s for s in systems if s not in ADAPTERS]
        if unknown or not systems:
            parser.error(f"unknown system(s) {unknown}; registered: {', '.join(ADAPTERS)}")
        try:
            parse_db_url(args.db)
        except ValueError as exc:
            parser.error(str(exc))
    except SystemExit as exc:
        return int(exc.code or 0)
    params = WorkloadParams(
        workers=args.workers,
        conversations=args.conversations,
        steps=args.steps,
        tool_calls=args.tool_calls,
        duration=args.duration,
        double_submit=args.double_submit,
        interrupt=args.interrupt,
        think_ms=args.think_ms,
        preload=args.preload,
        seed=args.seed,
        pool_size=args.pool_size,
    )
    config = BenchConfig(args.db, systems, params, sweep=args.sweep, in_process=args.in_process)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    report = run_benchmark(config, console)

    from .report import print_report, write_json

    print_report(report, console)
    main_results = report.main
    if "store" in main_results and "store-http" in main_results:
        local, http = main_results["store"], main_results["store-http"]
        ratio = http.steps_per_s / local.steps_per_s if local.steps_per_s else 0.0
        console.print(
            f"HTTP service / in process: {http.steps_per_s:.0f} / {local.steps_per_s:.0f} "
            f"steps/s = {ratio:.2f}x"
        )
    if args.json:
        write_json(report, args.json)
        console.print(f"JSON: {args.json}")
    if args.chart and report.results:
        from .chart import draw_chart

        draw_chart(report, args.chart)
        console.print(f"chart: {args.chart}")
    return 1 if report.failures else 0
