"""Replay speed: a long conversation from the database to a provider body, against a raw
SELECT of the same rows plus JSON decoding, side by side in one run.

    python -m benchmarks.replay_speed [--db URL] [--messages 10000] [--repeat 7]

It writes the conversation through the store (K=3 parallel calls per step, HTML results
of a few hundred bytes), then times, alternately and ``--repeat`` times each, (a) the
ceiling: asyncpg ``SELECT`` of the message rows on an open connection and ``json.loads``
of their JSON columns; (b) ``store.replay(conversation, provider)`` for each provider,
what a user calls for the store's own history; and (c) for comparison, the general path
any history takes: ``store.history`` -> ``from_stored_messages`` -> ``build_request``.
(b) and (c) are first checked to return the same body and repairs. Each timed call starts
on a fully collected heap (see ``_timed``). It prints the medians and the ratios to (a).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg

from store import AssistantMessage, Store, ToolCall, ToolResult
from store.replay import PROVIDERS, Repair, build_request
from store.replay.readers import from_stored_messages

from .dbtarget import DEFAULT_DB, parse_db_url

RAW_SELECT = (
    "SELECT position, role, turn_id, step, tool_call_count, content::text, tool_call_id,"
    " tool_name, tool_arguments::text, tool_call_data::text, is_error, created_at"
    " FROM turnstore_messages WHERE conversation_id = $1 ORDER BY position"
)


async def _fill(store: Store, conversation_id: str, messages: int) -> int:
    html = "<section class='hero'><h1>Bakery</h1><p>" + "fresh bread " * 30 + "</p></section>"
    written = 0
    while written < messages:
        turn = await store.begin_turn(conversation_id, f"prompt {written}")
        written += 1
        for s in range(4):
            calls = [ToolCall(f"{turn.id}_{s}_{k}", "insertHtml", {"html": html}) for k in range(3)]
            await turn.commit_step(
                AssistantMessage(f"step {s}", calls), [ToolResult(c.id, html) for c in calls]
            )
            written += 4
        await turn.finish("done")
        written += 1
    return written


async def _raw(conn: asyncpg.Connection, conversation_id: str) -> int:
    rows = await conn.fetch(RAW_SELECT, conversation_id)
    decoded = [
        (json.loads(r[5]), r[8] and json.loads(r[8]), r[9] and json.loads(r[9])) for r in rows
    ]
    return len(decoded)


async def _general(store: Store, provider: str) -> tuple[dict[str, Any], list[Repair]]:
    """The path any history takes: read it, convert it, sanitize it, format it."""
    return build_request(from_stored_messages(await store.history("long")), provider)


def _json(result: tuple[dict[str, Any], list[Repair]]) -> str:
    body, repairs = result
    return json.dumps([body, [r.to_dict() for r in repairs]])


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    """Seconds one call takes, started on a fully collected heap: else a full collection
    made due by the garbage of earlier calls (about 25 ms here, a third of the raw read)
    lands on whichever path happens to run next, whatever that path allocates."""
    gc.collect()
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def main_async(url: str, messages: int, repeat: int) -> None:
    target = parse_db_url(url)
    if target.backend != "postgres" or target.asyncpg_dsn is None:
        raise SystemExit("replay_speed runs on PostgreSQL")
    schema = f"replay_speed_{uuid.uuid4().hex[:8]}"
    store = await Store.open(target.sqlalchemy_url(schema), schema=schema)
    try:
        total = await _fill(store, "long", messages)
        print(f"{total} messages stored in conversation 'long'")
        for provider in PROVIDERS:
            replayed = await store.replay("long", provider)
            assert not replayed[1], replayed[1][:3]
            assert _json(replayed) == _json(await _general(store, provider)), provider
        raw = await asyncpg.connect(target.asyncpg_dsn, server_settings={"search_path": schema})
        paths: dict[str, Callable[[], Awaitable[object]]] = {
            "raw": functools.partial(_raw, raw, "long"),
            **{f"replay {p}": functools.partial(store.replay, "long", p) for p in PROVIDERS},
            **{f"general {p}": functools.partial(_general, store, p) for p in PROVIDERS},
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeat):
            for name, call in paths.items():
                times[name].append(await _timed(call))
        await raw.close()
        base = statistics.median(times["raw"])
        print(f"{'path':<28}{'median ms':>10}{'min ms':>8}{'max ms':>8}{'ratio':>8}")
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f"{name:<28}{median * 1000:>10.1f}{min(values) * 1000:>8.1f}"
                f"{max(values) * 1000:>8.1f}{median / base:>8.2f}"
            )
    finally:
        await store.close()
        conn = await asyncpg.connect(target.asyncpg_dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay_speed")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    anyio.run(main_async, args.db, args.messages, args.repeat)


if __name__ == "__main__":
    main()
