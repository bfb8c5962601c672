"""``python -m store soak``: the command line, the checks of what it asks for, and the run
(workers, faults, verification, report).

    python -m store soak [--db URL | --own-server] [--duration 120] [--workers 6]
        [--conversations 12] [--lease 2] [--faults kill,stop,terminate,restart] [--seed N]
        [--json FILE]

Without ``--db`` (or with ``--own-server``) it runs on a throwaway PostgreSQL server of its
own (``store.soak.pgserver``), which it may restart and removes at the end. It never
restarts a server it did not start: on a ``--db`` server, ``restart`` is refused. On
SQLite only ``kill`` and ``stop`` apply. On a ``--db`` PostgreSQL server the soak keeps its
tables in a schema of its own (dropped at the end of a clean run) and ``terminate`` ends
only that schema's sessions. Exit 0 when nothing was lost and nothing broke, 1 otherwise,
2 on a command-line error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..config import StoreConfig
from ..store import Store
from .pgserver import ServerUnavailable, ThrowawayPostgres
from .records import Record, Tail, conversation_id, read_records
from .report import Display, Progress, print_summary, write_json
from .supervisor import FAULTS, OWN_SERVER_SESSIONS, Faults, Workers, worker_command
from .verify import Verdict, verify
from .worker import GRACE_SECONDS

#: faults each kind of target supports
SUPPORTED = {
    "own": list(FAULTS),
    "postgres": ["kill", "stop", "terminate"],
    "sqlite": ["kill", "stop"],
}
TASKS_PER_WORKER = 3
READY_TIMEOUT_SECONDS = 60.0


class UsageError(Exception):
    """A command-line error: one line, exit 2."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        default=None,
        help="database URL (postgresql+asyncpg://... or sqlite+aiosqlite:///path); "
        "default: a throwaway PostgreSQL server of the soak's own",
    )
    where.add_argument(
        "--own-server",
        action="store_true",
        help="run on a throwaway PostgreSQL server (initdb in a temporary directory)",
    )
    p.add_argument("--duration", type=float, default=120.0, help="seconds of faults (120)")
    p.add_argument("--workers", type=int, default=6, help="worker processes (6)")
    p.add_argument("--conversations", type=int, default=12, help="conversations shared (12)")
    p.add_argument("--lease", type=float, default=2.0, help="StoreConfig.lease_seconds (2)")
    p.add_argument(
        "--faults",
        default=None,
        help="comma-separated, of kill,stop,terminate,restart (default: all the target supports)",
    )
    p.add_argument(
        "--seed", type=int, default=None, metavar="N", help="random seed (default: random)"
    )
    p.add_argument(
        "--json", dest="json_path", metavar="FILE", type=Path, default=None, help="write the result"
    )


@dataclass(frozen=True)
class Options:
    url: str | None  # None: the soak's own server
    kind: str  # "own", "postgres" or "sqlite"
    faults: list[str]
    duration: float
    workers: int
    conversations: int
    lease: float
    seed: int
    json_path: Path | None


def resolve(args: argparse.Namespace) -> Options:
    """Check the command line; raise UsageError (one line) on what cannot run."""
    for name, minimum in (("duration", 0), ("lease", 0)):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > minimum):
            raise UsageError(f"--{name} must be a positive number of seconds, got {value}")
    for name in ("workers", "conversations"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    url: str | None = None
    kind = "own"
    if args.db is not None and not args.own_server:
        try:
            parsed = make_url(args.db)
        except ArgumentError:
            raise UsageError(f"not a database URL: {args.db!r}") from None
        backend = parsed.get_backend_name()
        if backend == "postgresql":
            kind = "postgres"
        elif backend == "sqlite":
            kind = "sqlite"
            if not parsed.database or parsed.database == ":memory:":
                raise UsageError(
                    "SQLite needs a database file the workers share: sqlite+aiosqlite:///path"
                )
        else:
            raise UsageError(
                f"unsupported database URL {args.db!r}: use postgresql+asyncpg://... or "
                "sqlite+aiosqlite:///path"
            )
        url = args.db
    supported = SUPPORTED[kind]
    if args.faults is None:
        faults = supported
    else:
        faults = [f.strip() for f in args.faults.split(",") if f.strip()]
        unknown = [f for f in faults if f not in FAULTS]
        if unknown or not faults:
            raise UsageError(
                f"unknown fault {', '.join(unknown) or '(none given)'}; choose from "
                f"{','.join(FAULTS)}"
            )
        refused = [f for f in faults if f not in supported]
        if refused and kind == "sqlite":
            raise UsageError(
                f"refusing fault {','.join(refused)} on SQLite: it has no server; "
                "SQLite supports kill,stop"
            )
        if "restart" in refused:
            raise UsageError(
                "refusing fault restart: the soak restarts only a PostgreSQL server it "
                "started itself; use --own-server (or leave out --db)"
            )
        faults = list(dict.fromkeys(faults))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    return Options(
        url, kind, faults, args.duration, args.workers, args.conversations, args.lease, seed,
        args.json_path,
    )  # fmt: skip


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def _prepare(options: Options, url: str, schema: str | None) -> None:
    """Reach the database and apply the migrations once, before any worker starts."""
    if options.kind == "postgres":
        try:
            conn = await asyncpg.connect(_dsn(url), timeout=5)
        except Exception as exc:
            raise UsageError(f"cannot reach the database at {_shown(url)}: {exc}") from None
        await conn.close()
    try:
        store = await Store.open(url, schema=schema)
    except Exception as exc:
        raise UsageError(f"cannot open the store at {_shown(url)}: {exc}") from None
    await store.close()


async def _drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _count(records: list[Record]) -> dict[str, Any]:
    claims = [r for r in records if r.get("t") == "claim"]
    kinds = Counter(str(r.get("t")) for r in records)
    expected = Counter(str(r.get("kind")) for r in records if r.get("t") == "expected")
    unexpected = [r for r in records if r.get("t") == "unexpected"]
    return {
        "turns": sum(1 for r in claims if not r.get("dup")),
        "duplicates": sum(1 for r in claims if r.get("dup")),
        "steps": len({(r["turn"], r["step"]) for r in records if r.get("t") == "step"}),
        "checkpointed_results": len({r["call"] for r in records if r.get("t") == "ckpt"}),
        "finishes": kinds["finish"],
        "cancelled": kinds["cancelled"],
        "taken_over": kinds["taken_over"],
        "expected_errors": dict(sorted(expected.items())),
        "expected_errors_by_place": dict(
            sorted(
                Counter(
                    f"{r.get('kind')} in {r.get('where')}"
                    for r in records
                    if r.get("t") == "expected"
                ).items()
            )
        ),
        "outcome_unknown": expected["OutcomeUnknown"],
        "outcome_unknown_answered": kinds["answered"],
        "write_not_applied": expected["WriteNotApplied"],
        "unexpected_errors": len(unexpected),
        "unexpected": unexpected,
    }


class Interrupted(Exception):
    """SIGINT or SIGTERM: the run stopped its workers and gave up."""


@dataclass
class _Run:
    """One soak run's parts, for the progress display and the result."""

    options: Options
    url: str
    schema: str | None
    directory: Path
    workers: Workers
    faults: Faults
    tail: Tail
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting workers"
    faulted: float = 0.0

    def look(self) -> Progress:
        self.tail.poll()
        return Progress(
            phase=self.phase,
            elapsed=time.monotonic() - self.started,
            duration=self.options.duration,
            workers_running=len(self.workers.running()),
            workers_stopped=sum(1 for w in self.workers.current.values() if w.stopped),
            workers_started=self.workers.started,
            faults=dict(self.faults.log.counts),
            last_fault=self.faults.log.last,
            records=dict(self.tail.counts),
            expected=dict(self.tail.expected),
        )


async def soak(options: Options, url: str, server: ThrowawayPostgres | None) -> dict[str, Any]:
    """Prepare the database, run the workers under faults, stop them, verify."""
    run_id = secrets.token_hex(3)
    schema = f"soak_{run_id}" if options.kind == "postgres" else None
    await _prepare(options, url, schema)
    directory = Path(tempfile.mkdtemp(prefix="turnstore-soak-"))
    conversations = [conversation_id(run_id, i) for i in range(options.conversations)]
    command = worker_command(
        url, schema, run_id, options.conversations, options.lease, TASKS_PER_WORKER, options.seed
    )
    workers = Workers(command, directory, options.workers)
    faults = Faults(
        options.faults,
        random.Random(options.seed),
        workers,
        options.lease,
        server=server,
        dsn=_dsn(url) if options.kind != "sqlite" else None,
        sessions=OWN_SERVER_SESSIONS if server is not None else f"turnstore:{schema}",
    )
    run = _Run(options, url, schema, directory, workers, faults, Tail(directory))
    print(
        f"soak: {options.kind} {_shown(url)}{f' schema {schema}' if schema else ''}, "
        f"{options.workers} workers x {TASKS_PER_WORKER} tasks, {options.conversations} "
        f"conversations, lease {options.lease}s, faults {','.join(options.faults)}, "
        f"{options.duration:g}s, seed {options.seed}, logs {directory}",
        flush=True,
    )
    interrupted = False
    with Display() as display:
        async with anyio.create_task_group() as tg:

            async def show() -> None:
                while True:
                    display.show(run.look())
                    await anyio.sleep(0.25)

            async def on_signal() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(show)
            tg.start_soon(on_signal)
            await _faults_phase(run, tg)
            run.phase = "verifying"
            records = read_all(directory)
            store = await Store.open(
                url, schema=schema, config=StoreConfig(lease_seconds=options.lease)
            )
            try:
                verdict = await verify(store, records, conversations, options.lease)
            finally:
                with anyio.CancelScope(shield=True):
                    await store.close()
            display.show(run.look(), force=True)
            tg.cancel_scope.cancel()
    if interrupted:
        raise Interrupted(f"interrupted; workers stopped, logs in {directory}")
    return await _result(run, records, verdict)


async def _faults_phase(run: _Run, tg: anyio.abc.TaskGroup) -> None:
    """Start the workers, inject faults for the duration, stop the workers (also when
    cancelled)."""
    watching = anyio.CancelScope()
    try:
        await run.workers.start_all()
        await run.workers.wait_ready(READY_TIMEOUT_SECONDS)
        tg.start_soon(_watch, run.workers, watching)
        run.phase = "injecting faults"
        began = time.monotonic()
        await run.faults.run(run.options.duration)
        run.faulted = time.monotonic() - began
    finally:
        watching.cancel()
        run.phase = "stopping workers"
        with anyio.CancelScope(shield=True):
            await run.workers.stop_all(GRACE_SECONDS + 6.0)


async def _result(run: _Run, records: list[Record], verdict: Verdict) -> dict[str, Any]:
    """The JSON result; a clean run's logs (and PostgreSQL schema) are removed."""
    options, workers, faults = run.options, run.workers, run.faults
    counts = _count(records)
    violations = list(verdict.violations)
    for r in counts.pop("unexpected"):
        detail = f"{r.get('w')} in {r.get('where')}: {r.get('error')}"
        violations.append({"kind": "unexpected_error", "detail": detail})
    for crash in workers.crashes:
        detail = f"{crash.name} exited {crash.returncode}: {crash.output_tail[-500:]}"
        violations.append({"kind": "worker_crashed", "detail": detail})
    for error in faults.log.errors:
        violations.append({"kind": "fault_failed", "detail": error})
    ok = not violations
    kept = None
    if ok:
        shutil.rmtree(run.directory, ignore_errors=True)
        if run.schema is not None:
            await _drop_schema(run.url, run.schema)
    else:
        kept = str(run.directory) + (f" (schema {run.schema})" if run.schema else "")
        (run.directory / "database.json").write_text(json.dumps(verdict.database, default=str))
    backend = {"own": "postgresql (own server)", "postgres": "postgresql", "sqlite": "sqlite"}
    return {
        "ok": ok,
        "backend": backend[options.kind],
        "url": _shown(run.url),
        "schema": run.schema,
        "seed": options.seed,
        "duration": round(run.faulted, 1),
        "requested_duration": options.duration,
        "workers": options.workers,
        "workers_started": workers.started,
        "tasks_per_worker": TASKS_PER_WORKER,
        "conversations": options.conversations,
        "lease_seconds": options.lease,
        **counts,
        "faults": {kind: faults.log.counts.get(kind, 0) for kind in options.faults},
        "terminated_sessions": faults.log.terminated_sessions,
        "fault_events": faults.log.events,
        "recoveries": verdict.recoveries,
        "recovered_steps": verdict.recovered_steps,
        "recovered_results": verdict.recovered_results,
        "worker_crashes": len(workers.crashes),
        "lost_acknowledged_steps": verdict.lost_acknowledged_steps,
        "changed_acknowledged_steps": verdict.changed_acknowledged_steps,
        "lost_checkpointed_results": verdict.lost_checkpointed_results,
        "stuck_conversations": verdict.stuck_conversations,
        "slowest_new_turn_seconds": verdict.slowest_new_turn_seconds,
        "turns_by_status": verdict.turns_by_status,
        "messages": verdict.messages,
        "replays": verdict.replays,
        "checker": verdict.checker,
        "violations": len(violations),
        "violations_by_kind": dict(Counter(v["kind"] for v in violations)),
        "violation_samples": violations[:100],
        "kept": kept,
    }


def read_all(directory: Path) -> list[Record]:
    """Every record of every worker's log."""
    return [r for path in sorted(directory.glob("*.jsonl")) for r in read_records(path)]


async def _watch(workers: Workers, scope: anyio.CancelScope) -> None:
    with scope:
        await workers.watch()


def run(args: argparse.Namespace) -> int:
    try:
        options = resolve(args)
        if options.kind == "own":
            with ThrowawayPostgres() as server:
                result = anyio.run(soak, options, server.url, server)
        else:
            assert options.url is not None
            result = anyio.run(soak, options, options.url, None)
    except (UsageError, ServerUnavailable) as exc:
        print(f"soak: {' '.join(str(exc).split())}", file=sys.stderr)  # one line
        return 2
    except Interrupted as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 130
    print_summary(result)
    if options.json_path is not None:
        write_json(options.json_path, result)
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store soak", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
