"""``replay-speed``: a long conversation from the database to a provider body, against a
raw SELECT of the same rows plus JSON decoding, side by side in one run (PostgreSQL).

It writes the conversation through the store (turns of four steps of three parallel
calls, HTML results of about 400 bytes), then times, alternately and ``--repeat`` times
each, (a) the ceiling: asyncpg ``SELECT`` of the message rows on an open connection and
``json.loads`` of their JSON columns; (b) ``store.replay(conversation, provider)`` for
each provider, what a user calls for the store's own history; and (c) for comparison, the
general path any history takes: ``store.history`` -> ``from_stored_messages`` ->
``build_request``. (b) and (c) are first checked to return the same body and repairs.
Each timed call starts on a fully collected heap (see ``_timed``). It reports the medians
and the ratios to (a).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from store import Store
from store.replay import PROVIDERS, Repair, build_request
from store.replay.readers import from_stored_messages

from .fixtures import html, postgres, scratch_store, step

RAW_SELECT = (
    "SELECT position, role, turn_id, step, tool_call_count, content::text, tool_call_id,"
    " tool_name, tool_arguments::text, tool_call_data::text, is_error, created_at"
    " FROM turnstore_messages WHERE conversation_id = $1 ORDER BY position"
)
CONVERSATION = "long"


async def _fill(store: Store, messages: int) -> int:
    payload = html(414)
    written = 0
    while written < messages:
        turn = await store.begin_turn(CONVERSATION, f"prompt {written}")
        written += 1
        for s in range(4):
            await turn.commit_step(*step(f"{turn.id}_{s}", f"step {s}", payload))
            written += 4
        await turn.finish("done")
        written += 1
    return written


async def _raw(conn: asyncpg.Connection) -> int:
    rows = await conn.fetch(RAW_SELECT, CONVERSATION)
    decoded = [
        (json.loads(r[5]), r[8] and json.loads(r[8]), r[9] and json.loads(r[9])) for r in rows
    ]
    return len(decoded)


async def _general(store: Store, provider: str) -> tuple[dict[str, Any], list[Repair]]:
    """The path any history takes: read it, convert it, sanitize it, format it."""
    return build_request(from_stored_messages(await store.history(CONVERSATION)), provider)


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


async def measure(url: str, messages: int, repeat: int) -> tuple[int, dict[str, list[float]]]:
    """The messages stored, and each path's seconds (``raw``, ``replay <provider>``,
    ``general <provider>``), ``repeat`` values each."""
    dsn = postgres(url, "replay-speed").asyncpg_dsn
    async with scratch_store(url, "replay_speed") as (store, schema):
        total = await _fill(store, messages)
        for provider in PROVIDERS:
            replayed = await store.replay(CONVERSATION, provider)
            assert not replayed[1], replayed[1][:3]
            assert _json(replayed) == _json(await _general(store, provider)), provider
        raw = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            paths: dict[str, Callable[[], Awaitable[object]]] = {
                "raw": functools.partial(_raw, raw),
                **{f"replay {p}": functools.partial(store.replay, CONVERSATION, p)
                   for p in PROVIDERS},
                **{f"general {p}": functools.partial(_general, store, p) for p in PROVIDERS},
            }  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(repeat):
                for name, call in paths.items():
                    times[name].append(await _timed(call))
        finally:
            await raw.close()
    return total, times


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=7)


async def run(args: argparse.Namespace) -> list[str]:
    total, times = await measure(args.db, args.messages, args.repeat)
    base = statistics.median(times["raw"])
    lines = [
        f"{total} messages stored in conversation {CONVERSATION!r}",
        f"{'path':<28}{'median ms':>10}{'min ms':>8}{'max ms':>8}{'ratio':>8}",
    ]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(
            f"{name:<28}{median * 1000:>10.1f}{min(values) * 1000:>8.1f}"
            f"{max(values) * 1000:>8.1f}{median / base:>8.2f}"
        )
    return lines
