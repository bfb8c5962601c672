"""``turn-growth``: cost growth with the number of turns a conversation has had (the load
benchmark's ``--preload`` grows the number of messages; this grows the turns).

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

from store import Store, StoreConfig

from ..dbtarget import parse_db_url
from .fixtures import scratch_store, step


async def _turn(store: Store, n: int) -> float:
    started = time.perf_counter()
    turn = await store.begin_turn("c", f"prompt {n}", idempotency_key=f"k{n}" if n % 2 else None)
    await turn.finish(*step(turn.id))
    return time.perf_counter() - started


async def measure(url: str, turns: int, sample: int) -> dict[str, float]:
    """``{"p50_early_ms", "p50_late_ms", "ratio"}``."""
    if turns < 2 * sample:
        raise SystemExit("--turns must be at least twice --sample")
    config = StoreConfig(busy_timeout=300, lease_seconds=60)
    # sqlite_synchronous: as the load benchmark runs it
    scratch = scratch_store(url, "turn_growth", config=config, sqlite_synchronous="NORMAL")
    async with scratch as (store, _schema):
        for n in range(sample):  # warm-up: connections, caches, plans
            await _turn(store, n)
        early = [await _turn(store, n) for n in range(sample, 2 * sample)]
        for n in range(2 * sample, turns - sample):
            await _turn(store, n)
        late = [await _turn(store, n) for n in range(turns - sample, turns)]
    p50_early = statistics.median(early) * 1000
    p50_late = statistics.median(late) * 1000
    return {"p50_early_ms": p50_early, "p50_late_ms": p50_late, "ratio": p50_late / p50_early}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--turns", type=int, default=3000)
    p.add_argument("--sample", type=int, default=200)


async def run(args: argparse.Namespace) -> list[str]:
    r = await measure(args.db, args.turns, args.sample)
    return [
        f"{parse_db_url(args.db).backend}: a turn's p50 is {r['p50_early_ms']:.2f} ms over turns "
        f"{args.sample + 1}-{2 * args.sample} of one conversation, {r['p50_late_ms']:.2f} ms over "
        f"turns {args.turns - args.sample + 1}-{args.turns} ({r['ratio']:.2f}x)"
    ]
