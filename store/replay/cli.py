"""``replay``: print a provider request built from a stored conversation.

    replay --provider P (--input FILE --format instatic
                        | --db URL --conversation ID [--format store|instatic] [--table T])
           [--unanswered synthesize|drop] [--last N] [--schema S] [--system TEXT]

Prints one JSON object: the provider's body fields plus ``"repairs"``. Exit 0 whenever a
body was produced; exit 2, with a one-line error on stderr, for bad arguments or input
that cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import NoReturn, TextIO

import anyio
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ..errors import SchemaError
from ..history import read_history
from ..messages import StoredMessage
from ..store import check_schema, make_backend
from . import PROVIDERS, build_request
from .model import Message
from .readers import (
    ReplayInputError,
    from_stored_messages,
    load_instatic_file,
    read_instatic_table,
)


async def read_store_history(
    url: str, conversation_id: str, *, schema: str | None = None, last: int | None = None
) -> list[StoredMessage]:
    """A conversation's committed history, read from a turnstore database."""
    parsed = make_url(url)
    if (
        parsed.get_backend_name() == "sqlite"
        and not await anyio.Path(parsed.database or "").is_file()
    ):
        raise ReplayInputError(f"no SQLite database at {parsed.database!r}")
    backend = make_backend(parsed, schema=schema)
    try:
        await check_schema(backend)
        history = await read_history(backend, conversation_id, last)
    finally:
        await backend.close()
    if not history:
        raise ReplayInputError(f"no messages for conversation {conversation_id!r}")
    return history


FORMATS = ("instatic", "store")
SOURCE_KINDS = ("instatic-file", "instatic-table", "store")


async def read_source(
    kind: str,
    location: str,
    *,
    conversation_id: str | None = None,
    table: str = "ai_messages",
    schema: str | None = None,
    last: int | None = None,
) -> list[Message]:
    """The CLI's one entry to input: canonical messages for a source of kind ``kind``.

    - ``"instatic-file"``: ``location`` is a JSON dump of ``ai_messages`` rows.
    - ``"instatic-table"``: ``location`` is a SQLAlchemy async URL; reads ``table``.
    - ``"store"``: ``location`` is a turnstore database URL (``schema`` on PostgreSQL);
      ``last`` keeps the last N messages, from the start of the turn they begin in.
    """
    if kind == "store":
        if not conversation_id:
            raise ReplayInputError("--db needs --conversation ID")
        return from_stored_messages(
            await read_store_history(location, conversation_id, schema=schema, last=last)
        )
    if kind == "instatic-file":
        return load_instatic_file(location, conversation_id=conversation_id)
    if kind == "instatic-table":
        if not conversation_id:
            raise ReplayInputError("--db needs --conversation ID")
        messages = await read_instatic_table(location, conversation_id, table)
        if not messages:
            raise ReplayInputError(f"no rows for conversation {conversation_id!r} in {table!r}")
        return messages
    raise ReplayInputError(f"unknown source kind {kind!r}; known: {', '.join(SOURCE_KINDS)}")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> _Parser:
    parser = _Parser(
        prog="replay", description="Print a provider request built from stored history."
    )
    parser.add_argument("--provider", required=True, help=", ".join(PROVIDERS))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="FILE", help="a JSON dump of stored rows")
    source.add_argument("--db", metavar="URL", help="a SQLAlchemy async database URL")
    parser.add_argument(
        "--format", help="instatic (--input, or an ai_messages table with --db) or store (--db)"
    )
    parser.add_argument("--conversation", metavar="ID", help="conversation id (needed by --db)")
    parser.add_argument("--table", default="ai_messages", help="Instatic table for --db")
    parser.add_argument("--schema", default=None, help="PostgreSQL schema of a store")
    parser.add_argument(
        "--last",
        type=int,
        default=None,
        help="the last N messages, from the start of the turn they begin in",
    )
    parser.add_argument("--unanswered", default="synthesize", help="synthesize or drop")
    parser.add_argument("--system", default=None, help="a system prompt (instructions) to send")
    return parser


def _source(args: argparse.Namespace) -> tuple[str, str]:
    if args.provider not in PROVIDERS:
        raise _UsageError(f"unknown provider {args.provider!r}; choose {', '.join(PROVIDERS)}")
    if args.unanswered not in ("synthesize", "drop"):
        raise _UsageError(f"--unanswered must be synthesize or drop, not {args.unanswered!r}")
    if args.input is not None:
        if args.format != "instatic":
            raise _UsageError(f"--input needs --format instatic, got {args.format!r}")
        return "instatic-file", args.input
    if not args.conversation:
        raise _UsageError("--db needs --conversation ID")
    if args.format not in (None, *FORMATS):
        raise _UsageError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    return ("instatic-table" if args.format == "instatic" else "store"), args.db


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def run_replay(
    argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run ``replay`` with ``argv`` (without the program name); return the exit status.
    Synchronous: call it from outside an event loop."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = _parser().parse_args(argv)
        kind, location = _source(args)
        messages = asyncio.run(
            read_source(
                kind,
                location,
                conversation_id=args.conversation,
                table=args.table,
                schema=args.schema,
                last=args.last,
            )
        )
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except _UsageError as exc:
        print(f"replay: error: {exc}", file=err)
        return 2
    except (ReplayInputError, SchemaError, SQLAlchemyError, OSError, ValueError) as exc:
        print(f"replay: error: {_one_line(exc)}", file=err)
        return 2
    body, repairs = build_request(
        messages, args.provider, unanswered=args.unanswered, system=args.system
    )
    json.dump(
        {**body, "repairs": [r.to_dict() for r in repairs]}, out, ensure_ascii=False, indent=2
    )
    out.write("\n")
    return 0
