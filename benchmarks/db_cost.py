"""What the database spends per step, and what each of the schema's checks costs of it
(PostgreSQL).

    python -m benchmarks.db_cost [--db URL] [--turns 200] [--batch 8] [--repeat 5]

One connection sends turns straight to ``turnstore_apply`` (the store's client is not in
the way), ``--batch`` conversations at a time: a batch of claims, a batch of first steps,
a batch of last steps that end their turns (each step three tool calls with HTML
payloads). It reads its backend's CPU time (``/proc/<pid>/stat``: the server must run on
this machine) over ``--turns`` rounds, after a warm-up, and prints it per step. The same
runs on copies of the schema with one of its checks removed (``VARIANTS``), in rounds,
``--repeat`` of them: the ratio to the shipped schema's run of the same round is what that
check costs. ``synchronous_commit`` is
off for the session, so that the WAL flush's wait and its noise stay out of the figure.
A profiling tool: the variants are throwaway schemas, never what the store runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

import anyio
import asyncpg

from store.backends.base import ClaimRequest, StepWrite, TurnEnd, lock_key
from store.backends.postgres import as_record

from .dbtarget import DEFAULT_DB, parse_db_url
from .scratch import scratch_schema

APPLY = "SELECT * FROM turnstore_apply($1::turnstore_write[])"
HTML = '"<section><h2>Menu</h2><p>' + "sourdough, rye, " * 40 + '</p></section>"'
ARGUMENTS = '{"html":' + HTML + "}"
RESULT = '[{"type":"text","text":' + HTML + "}]"
VARIANTS: dict[str, tuple[str, ...]] = {
    "as shipped": (),
    "without the pairing foreign keys": (
        "ALTER TABLE turnstore_messages DROP CONSTRAINT turnstore_dense_positions,"
        " DROP CONSTRAINT turnstore_result_follows_its_step,"
        " DROP CONSTRAINT turnstore_every_call_answered",
    ),
    "without the shape check": (
        "ALTER TABLE turnstore_messages DROP CONSTRAINT turnstore_message_shape",
    ),
    "without the append-only triggers": (
        "DROP TRIGGER turnstore_messages_no_update ON turnstore_messages",
        "DROP TRIGGER turnstore_messages_no_delete ON turnstore_messages",
    ),
}


def _backend_cpu(pid: int) -> float:
    """User + system CPU seconds of a process on this machine."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Rounds:
    """Turns on ``batch`` conversations, one batch of writes per call."""

    def __init__(self, conn: asyncpg.Connection, namespace: str, batch: int) -> None:
        self.conn = conn
        self.convs = [f"c{i}" for i in range(batch)]
        self.keys = {c: lock_key(namespace, c) for c in self.convs}

    async def round(self, tag: str) -> None:
        turns = {c: f"t{tag}_{c}" for c in self.convs}
        claims = [
            ClaimRequest(
                lock_key=self.keys[c],
                conversation_id=c,
                turn_id=turns[c],
                idempotency_key=f"k{tag}",
                content_hash=f"h{tag}",
                content_json='[{"type":"text","text":"hi"}]',
                owner="db_cost",
                lease_seconds=30.0,
                window_seconds=0.0,
                fail_when_busy=True,
                first=True,
                retry=False,
            )
            for c in self.convs
        ]
        rows = await self.conn.fetch(APPLY, [as_record(w) for w in claims])
        started = {r["turn_id"]: (r["epoch"], r["next_position"]) for r in rows}
        if len(started) != len(self.convs) or any(r["outcome"] != "claimed" for r in rows):
            raise RuntimeError(f"a claim was not granted: {rows}")
        position = {c: started[turns[c]][1] for c in self.convs}
        for step in (1, 2):
            writes: list[Any] = []
            for c in self.convs:
                ids = [f"{tag}_{c}_{step}_{k}" for k in range(3)]
                write = StepWrite(
                    lock_key=self.keys[c], conversation_id=c, turn_id=turns[c],
                    epoch=started[turns[c]][0], lease_seconds=30.0, step=step,
                    position=position[c], content_json='[{"type":"text","text":"inserting"}]',
                    call_ids=ids, tool_names=["insertHtml"] * 3,
                    arguments_json=[ARGUMENTS] * 3, call_data_json=[None] * 3,
                    results_json=[RESULT] * 3,
                    is_error=[False] * 3,
                )  # fmt: skip
                position[c] += 4
                if step == 2:
                    write = TurnEnd(
                        lock_key=write.lock_key, conversation_id=c, turn_id=write.turn_id,
                        epoch=write.epoch, status="finished", error=None, final=write,
                        lease_seconds=30.0,
                    )  # fmt: skip
                writes.append(write)
            rows = await self.conn.fetch(APPLY, [as_record(w) for w in writes])
            if any(r["outcome"] is not None for r in rows):
                raise RuntimeError(f"a step was refused: {rows}")


async def measure(url: str, alters: tuple[str, ...], turns: int, batch: int) -> float:
    """Backend CPU µs per step over ``turns`` rounds of ``batch`` turns (two steps each)."""
    async with scratch_schema(url, "db_cost") as (conn, schema):
        for statement in alters:
            await conn.execute(statement)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        rounds = _Rounds(conn, schema, batch)
        for n in range(max(10, turns // 4)):
            await rounds.round(f"warm{n}")
        before = _backend_cpu(pid)
        for n in range(turns):
            await rounds.round(f"run{n}")
        spent = _backend_cpu(pid) - before
    return spent / (turns * batch * 2) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.db_cost")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if parse_db_url(args.db).backend != "postgres":
        raise SystemExit("db_cost measures PostgreSQL backends")
    seen: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):
        for name, alters in VARIANTS.items():
            seen[name].append(anyio.run(measure, args.db, alters, args.turns, args.batch))
    shipped = seen["as shipped"]
    print(f"backend CPU per step, batches of {args.batch} writes ({args.repeat} runs each):")
    for name, values in seen.items():
        # each run against the shipped schema's run of the same round: the machine's
        # drift between rounds cancels out
        ratio = statistics.median(v / s for v, s in zip(values, shipped, strict=True))
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"  {name:34s} {statistics.median(values):5.0f} µs ({runs}); "
              f"{ratio:.2f}x as shipped (median of the rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
