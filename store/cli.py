"""``python -m store``: migrate, check, delete, demo, soak, serve, replay, bench."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import anyio

from . import sql
from .backends.base import MIGRATION_ATTEMPTS, MIGRATION_LOCK_TIMEOUT
from .checker import check
from .cli_errors import USAGE_ERROR, CommandError, describe, require_existing_sqlite
from .schema_window import SchemaState
from .store import DEFAULT_URL, make_backend


def _migrate(args: argparse.Namespace) -> int:
    """Apply every missing migration (expand and contract; with ``--to V`` those up to
    version V), each in its own transaction with a lock timeout; then say which code
    versions the schema serves."""
    if args.status:
        require_existing_sqlite(args.db)  # --status reads: it creates no database file

    async def run() -> tuple[list[int], SchemaState, str]:
        backend = make_backend(args.db, schema=args.schema)
        try:
            applied = []
            if not args.status:
                applied = await backend.migrate(
                    upto=args.to, lock_timeout=args.lock_timeout, attempts=args.attempts
                )
            return applied, await backend.schema_state(), backend.dialect
        finally:
            await backend.close()

    applied, state, dialect = anyio.run(run)
    if not args.status:
        print(f"applied migrations {applied}" if applied else "schema is up to date")
    code = sql.code_version(dialect)
    print(
        f"schema version {state.version}, serves code of version {state.floor} or later; "
        f"this turnstore is version {code}"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    require_existing_sqlite(args.db)

    async def run():  # type: ignore[no-untyped-def]
        backend = make_backend(args.db, schema=args.schema)
        try:
            if not await backend.applied_versions():
                raise CommandError(
                    "the database has no turnstore schema: run "
                    "`python -m store migrate --db URL` first"
                )
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


def _delete(args: argparse.Namespace) -> int:
    """Erase one conversation (every row of it, one transaction): exit 0 when erased (or
    there was nothing to erase), 1 when refused because a turn runs there."""
    from .errors import ConversationInUse
    from .store import Store

    require_existing_sqlite(args.db)

    async def run():  # type: ignore[no-untyped-def]
        store = await Store.open(args.db, schema=args.schema, migrate=False)
        try:
            return await store.delete_conversation(args.conversation, force=args.force)
        finally:
            await store.close()

    try:
        erased = anyio.run(run)
    except ConversationInUse as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    if not erased.existed:
        print(f"no conversation {args.conversation!r}: nothing deleted")
        return 0
    print(
        f"deleted conversation {args.conversation!r}: {erased.messages} messages, "
        f"{erased.turns} turns, {erased.staged_steps} staged steps, "
        f"{erased.session_marks} session marks, {erased.session_writes} session writes"
    )
    return 0


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


def _serve(args: argparse.Namespace) -> int:
    from .server.serve import run

    return run(args)


def build_parser(prog: str = "python -m store") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def db_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_URL) -> None:
        p.add_argument("--db", default=default, help=f"database URL (default {default})")
        p.add_argument("--schema", default=None, help="PostgreSQL schema (default: public)")

    p = sub.add_parser(
        "migrate",
        help="apply missing schema migrations (once per deploy, before the new code starts)",
    )
    db_args(p)
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=MIGRATION_LOCK_TIMEOUT,
        help="PostgreSQL: seconds a statement waits for a table's lock before the migration "
        f"is rolled back and tried again (default {MIGRATION_LOCK_TIMEOUT:g})",
    )
    p.add_argument(
        "--attempts",
        type=int,
        default=MIGRATION_ATTEMPTS,
        help=f"tries of a migration that timed out on a lock (default {MIGRATION_ATTEMPTS})",
    )
    p.add_argument(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="apply the missing migrations up to VERSION only (a deploy during which "
        "processes of the release before still run: docs/operations.md)",
    )
    p.add_argument(
        "--status", action="store_true", help="apply nothing: print the schema's version"
    )
    p.set_defaults(run=_migrate)

    p = sub.add_parser("check", help="scan a database for invariant violations; exit 1 if any")
    db_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_check)

    p = sub.add_parser(
        "delete",
        help="erase a conversation: every row of it, in one transaction (privacy requests); "
        "refused (exit 1) while a turn runs there unless --force",
    )
    db_args(p)
    p.add_argument("--conversation", required=True, help="the conversation id to erase")
    p.add_argument(
        "--force",
        action="store_true",
        help="erase even while a turn runs or waits there (its next write fails)",
    )
    p.set_defaults(run=_delete)

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

    from .server.serve import add_arguments as serve_arguments

    p = sub.add_parser(
        "serve",
        help="the HTTP service (/v1, OpenAPI at /openapi.json, docs at /docs): runtimes in "
        "any language begin turns, append events and steps, read and replay history",
    )
    serve_arguments(p)
    p.set_defaults(run=_serve)

    # listed for --help; main() hands their arguments to their own parsers
    sub.add_parser(
        "replay", help="print a provider request built from a stored conversation (replay -h)"
    )
    sub.add_parser(
        "bench",
        help="the load benchmark against the baselines, in a clone (bench -h); "
        "its profiling probes: bench profile -h",
    )
    return parser


def _replay(rest: list[str]) -> int:
    from .replay.cli import run_replay

    return run_replay(rest)


def _bench(rest: list[str]) -> int:
    try:
        from benchmarks.cli import main as bench_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "benchmarks":
            raise CommandError(
                "the benchmarks ship with the repository, not with the package: clone it and "
                "run `pip install -e '.[bench]'` there, then `python -m store bench`"
            ) from exc
        raise CommandError(
            f"the benchmark needs {exc.name!r}: run `pip install -e '.[bench]'` in the clone"
        ) from exc
    code: int = bench_main(rest)  # the benchmark is not type-checked with the library
    return code


#: Subcommands with a parser of their own: their arguments are passed on as they are.
FORWARDED: dict[str, Callable[[list[str]], int]] = {"replay": _replay, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "turnstore" if Path(sys.argv[0]).name == "turnstore" else "python -m store"
    parser = build_parser(prog)
    db: str | None = None
    try:
        if argv and argv[0] in FORWARDED:
            return FORWARDED[argv[0]](argv[1:])
        args = parser.parse_args(argv)
        db = getattr(args, "db", None)
        return int(args.run(args))
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        message = describe(exc, db)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
