"""Profiling probes: where a step's time goes, one question each, beside the load benchmark
(``python -m store bench``), which measures the whole.

    python -m benchmarks.profile PROBE [--db URL] [options]   (or python -m store bench profile)

``PROBES`` names them; each module holds its probe's ``arguments`` and ``run`` (the lines
it prints), and ``fixtures`` what they share (a throwaway store or schema, the turns they
write).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from ..dbtarget import DEFAULT_DB, parse_db_url
from . import apply, client, growth, replay, statements


@dataclass(frozen=True, slots=True)
class Probe:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Awaitable[list[str]]]


PROBES: dict[str, Probe] = {
    "db-cost": Probe(
        "PostgreSQL backend CPU per step, and what each check of the schema costs of it",
        apply.db_cost_arguments,
        apply.db_cost,
    ),
    "statement-cost": Probe(
        "what one statement's set-up costs on turnstore's tables, against its rows",
        statements.arguments,
        statements.run,
    ),
    "client-cost": Probe(
        "the store's own Python CPU per turn and step, the database answered in-process",
        client.arguments,
        client.run,
    ),
    "turn-growth": Probe(
        "a turn's latency early and late in one long conversation (PostgreSQL or SQLite)",
        growth.arguments,
        growth.run,
    ),
    "replay-speed": Probe(
        "store.replay of a long conversation against a raw SELECT and json.loads",
        replay.arguments,
        replay.run,
    ),
    "explain": Probe(
        "EXPLAIN ANALYZE of each statement inside turnstore_apply (auto_explain, superuser)",
        apply.explain_arguments,
        apply.explain,
    ),
}


def build_parser(prog: str = "python -m benchmarks.profile") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    probes = parser.add_subparsers(dest="probe", required=True, metavar="PROBE")
    for name, probe in PROBES.items():
        p = probes.add_parser(name, help=probe.help, description=probe.help)
        p.add_argument(
            "--db",
            default=os.environ.get("STORE_PG_URL", DEFAULT_DB),
            help="postgresql://... or sqlite:///file.db (default: $STORE_PG_URL or %(default)s)",
        )
        probe.arguments(p)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m benchmarks.profile") -> int:
    """Run one probe and print its lines. Exit status: 0, or 2 for bad arguments."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        try:
            parse_db_url(args.db)
        except ValueError as exc:
            parser.error(str(exc))
    except SystemExit as exc:
        return int(exc.code or 0)
    for line in anyio.run(PROBES[args.probe].run, args):
        print(line)
    return 0
