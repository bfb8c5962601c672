"""Cost growth with the number of turns a conversation has had (``--preload`` grows the
number of messages; this grows the turns).

    python -m benchmarks.turn_growth [--db URL] [--turns 3000] [--sample 200]

One conversation, one writer, no concurrency. A turn is a user message (every other one
keyless: a keyless submit looks for a duplicate by its content) and one step of three
tool calls, written with the turn's end. Each turn is timed from ``begin_turn`` to the
end of ``finish``. The p50 of the ``--sample`` turns that follow as many warm-up turns is
compared with the p50 of the last ``--sample`` of ``--turns``. Every write looks turns up
by a key, or among the conversation's live turns only, so the ratio of the two should
stay near 1. On SQLite it did not until bf4d116: two lookups read every turn the
conversation ever had (tests/test_plans_sqlite.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import anyio

from store import AssistantMessage, Store, StoreConfig, ToolCall, ToolResult

from .dbtarget import DEFAULT_DB, drop_pg_schema, parse_db_url, remove_sqlite_files

HTML = "<section><h2>Menu</h2><p>" + "sourdough, rye, " * 20 + "</p></section>"


async def _turn(store: Store, n: int) -> float:
    started = time.perf_counter()
    turn = await store.begin_turn("c", f"prompt {n}", idempotency_key=f"k{n}" if n % 2 else None)
    calls = [ToolCall(f"{turn.id}_{k}", "insertHtml", {"html": HTML}) for k in range(3)]
    await turn.finish(AssistantMessage("inserting", calls), [ToolResult(c.id, HTML) for c in calls])
    return time.perf_counter() - started


async def measure(url: str, turns: int, sample: int) -> dict[str, float]:
    if turns < 2 * sample:
        raise SystemExit("--turns must be at least twice --sample")
    target = parse_db_url(url)
    schema = f"turn_growth_{uuid.uuid4().hex[:8]}"
    store = await Store.open(
        target.sqlalchemy_url(schema),
        schema=schema if target.backend == "postgres" else None,
        config=StoreConfig(busy_timeout=300, lease_seconds=60),
        sqlite_synchronous="NORMAL",  # as the load benchmark runs it
    )
    try:
        for n in range(sample):  # warm-up: connections, caches, plans
            await _turn(store, n)
        early = [await _turn(store, n) for n in range(sample, 2 * sample)]
        for n in range(2 * sample, turns - sample):
            await _turn(store, n)
        late = [await _turn(store, n) for n in range(turns - sample, turns)]
    finally:
        await store.close()
        if target.backend == "postgres":
            assert target.asyncpg_dsn is not None
            await drop_pg_schema(target.asyncpg_dsn, schema)
        else:
            remove_sqlite_files(target.sqlite_file(schema))
    p50_early = statistics.median(early) * 1000
    p50_late = statistics.median(late) * 1000
    return {"p50_early_ms": p50_early, "p50_late_ms": p50_late, "ratio": p50_late / p50_early}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.turn_growth")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--turns", type=int, default=3000)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args(argv)
    r = anyio.run(measure, args.db, args.turns, args.sample)
    print(
        f"{parse_db_url(args.db).backend}: a turn's p50 is {r['p50_early_ms']:.2f} ms over turns "
        f"{args.sample + 1}-{2 * args.sample} of one conversation, {r['p50_late_ms']:.2f} ms over "
        f"turns {args.turns - args.sample + 1}-{args.turns} ({r['ratio']:.2f}x)"
    )


if __name__ == "__main__":
    main()
