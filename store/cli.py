"""``python -m store``: migrate, check, demo, soak, replay, bench."""

from __future__ import annotations

import argparse
import json
import sys

import anyio

from .checker import check
from .store import DEFAULT_URL, make_backend


def _migrate(args: argparse.Namespace) -> int:
    async def run() -> list[int]:
        backend = make_backend(args.db, schema=args.schema)
        try:
            return await backend.migrate()
        finally:
            await backend.close()

    applied = anyio.run(run)
    print(f"applied migrations {applied}" if applied else "schema is up to date")
    return 0


def _check(args: argparse.Namespace) -> int:
    async def run():  # type: ignore[no-untyped-def]
        backend = make_backend(args.db, schema=args.schema)
        try:
            return await check(backend)
        finally:
            await backend.close()

    report = anyio.run(run)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(
            f"{report.conversations} conversations, {report.turns} turns, "
            f"{report.messages} messages: "
            + ("no violations" if report.ok else f"{len(report.violations)} violations")
        )
        for v in report.violations[:50]:
            where = f" @{v.position}" if v.position is not None else ""
            print(f"  {v.kind:<26} {v.conversation_id}{where}: {v.detail}")
        if len(report.violations) > 50:
            print(f"  ... and {len(report.violations) - 50} more (use --json)")
    return 0 if report.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from .demo import main

    return main(
        args.db,
        workers=args.workers,
        conversations=args.conversations,
        turns=args.turns,
        seed=args.seed,
    )


def _soak(args: argparse.Namespace) -> int:
    from .soak.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def db_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_URL) -> None:
        p.add_argument("--db", default=default, help=f"database URL (default {default})")
        p.add_argument("--schema", default=None, help="PostgreSQL schema (default: public)")

    p = sub.add_parser("migrate", help="apply missing schema migrations")
    db_args(p)
    p.set_defaults(run=_migrate)

    p = sub.add_parser("check", help="scan a database for invariant violations; exit 1 if any")
    db_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_check)

    p = sub.add_parser("demo", help="concurrent double submits and interruptions, then check")
    p.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--conversations", type=int, default=24)
    p.add_argument("--turns", type=int, default=300)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(run=_demo)

    from .soak.cli import add_arguments as soak_arguments

    p = sub.add_parser(
        "soak",
        help="fault-injection soak: worker processes killed, stopped, cut off, the server "
        "restarted; then check nothing acknowledged was lost; exit 1 if anything was",
    )
    soak_arguments(p)
    p.set_defaults(run=_soak)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "replay":
        from .replay.cli import run_replay

        return run_replay(argv[1:])
    if argv and argv[0] == "bench":
        from benchmarks.cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.run(args))
