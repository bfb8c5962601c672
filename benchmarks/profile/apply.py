"""Turns sent straight to ``turnstore_apply`` on a connection of their own (the store's
client is not in the way), and two probes built on them (PostgreSQL):

* ``db-cost``: the backend's CPU time per step, on the schema as shipped and on copies
  without one of its checks (``VARIANTS``, throwaway schemas, never what the store runs);
* ``explain``: ``EXPLAIN ANALYZE`` of each statement inside ``turnstore_apply`` (a claim,
  a step, a last step that ends the turn) and of the foreign-key checks at COMMIT, after
  a history of turns (``auto_explain``: needs a superuser).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import asyncpg
import orjson

from store.backends.base import lock_key
from store.backends.postgres import as_record
from store.backends.records import ClaimRequest, StepWrite, TurnEnd

from ..cpu import backend_cpu_seconds
from .fixtures import CALLS_PER_STEP, html, postgres, scratch_connection

APPLY = "SELECT * FROM turnstore_apply($1::turnstore_write[])"
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


class Rounds:
    """Turns on ``batch`` conversations (``c0``, ``c1``, ...), one ``turnstore_apply`` call
    per phase of a round: the claims, the first steps, the last steps with their turns'
    ends, each step of ``CALLS_PER_STEP`` calls with HTML payloads of ``payload_bytes``."""

    def __init__(
        self, conn: asyncpg.Connection, schema: str, batch: int, payload_bytes: int = 680
    ) -> None:
        self.conn = conn
        self.convs = [f"c{i}" for i in range(batch)]
        self.keys = {c: lock_key(schema, c) for c in self.convs}  # as the store derives them
        body = orjson.dumps(html(payload_bytes)).decode()
        self.arguments = '{"html":' + body + "}"
        self.result = '[{"type":"text","text":' + body + "}]"

    @staticmethod
    def _claim(key: int, conversation: str, turn: str, tag: str) -> ClaimRequest:
        return ClaimRequest(
            lock_key=key, conversation_id=conversation, turn_id=turn, idempotency_key=f"k{tag}",
            content_hash=f"h{tag}", content_json='[{"type":"text","text":"hi"}]',
            owner="profile", lease_seconds=30.0, window_seconds=0.0, fail_when_busy=True,
            first=True, retry=False,
        )  # fmt: skip

    async def round(self, tag: str) -> None:
        keys = self.keys
        turns = {c: f"t{tag}_{c}" for c in self.convs}
        claims = [self._claim(keys[c], c, turns[c], tag) for c in self.convs]
        rows = await self.conn.fetch(APPLY, [as_record(w) for w in claims])
        started = {r["turn_id"]: (r["epoch"], r["next_position"]) for r in rows}
        if len(started) != len(self.convs) or any(r["outcome"] != "claimed" for r in rows):
            raise RuntimeError(f"a claim was not granted: {rows}")
        position = {c: started[turns[c]][1] for c in self.convs}
        k = CALLS_PER_STEP
        for step in (1, 2):
            writes: list[Any] = []
            for c in self.convs:
                write = StepWrite(
                    lock_key=keys[c], conversation_id=c, turn_id=turns[c],
                    epoch=started[turns[c]][0], lease_seconds=30.0, step=step,
                    position=position[c], content_json='[{"type":"text","text":"inserting"}]',
                    call_ids=[f"{tag}_{c}_{step}_{n}" for n in range(k)],
                    tool_names=["insertHtml"] * k, arguments_json=[self.arguments] * k,
                    call_data_json=[None] * k, results_json=[self.result] * k,
                    is_error=[False] * k,
                )  # fmt: skip
                position[c] += 1 + k
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


# --- db-cost -------------------------------------------------------------------------------


async def backend_cpu_per_step(url: str, alters: tuple[str, ...], turns: int, batch: int) -> float:
    """Backend CPU µs per step over ``turns`` rounds of ``batch`` turns (two steps each),
    after a warm-up, on a schema altered by ``alters``."""
    async with scratch_connection(url, "db_cost") as (conn, schema):
        for statement in alters:
            await conn.execute(statement)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        rounds = Rounds(conn, schema, batch)
        for n in range(max(10, turns // 4)):
            await rounds.round(f"warm{n}")
        before = backend_cpu_seconds(pid)
        for n in range(turns):
            await rounds.round(f"run{n}")
        spent = backend_cpu_seconds(pid) - before
    return spent / (turns * batch * 2) * 1e6


def db_cost_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--turns", type=int, default=200, help="timed rounds (default %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="turns a round (default %(default)s)")
    p.add_argument("--repeat", type=int, default=5, help="rounds of the variants")


async def db_cost(args: argparse.Namespace) -> list[str]:
    """Each variant's backend CPU per step, ``--repeat`` times in rounds; its ratio to the
    shipped schema's run of the same round (the machine's drift between rounds cancels
    out), median of the rounds."""
    postgres(args.db, "db-cost")
    seen: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):
        for name, alters in VARIANTS.items():
            seen[name].append(await backend_cpu_per_step(args.db, alters, args.turns, args.batch))
    shipped = seen["as shipped"]
    lines = [f"backend CPU per step, batches of {args.batch} writes ({args.repeat} runs each):"]
    for name, values in seen.items():
        ratio = statistics.median(v / s for v, s in zip(values, shipped, strict=True))
        runs = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"  {name:34s} {statistics.median(values):5.0f} µs ({runs}); "
                     f"{ratio:.2f}x as shipped (median of the rounds)")  # fmt: skip
    return lines


# --- explain -------------------------------------------------------------------------------

AUTO_EXPLAIN = (
    "LOAD 'auto_explain';"
    " SET auto_explain.log_min_duration = 0;"
    " SET auto_explain.log_analyze = on;"
    " SET auto_explain.log_buffers = on;"
    " SET auto_explain.log_nested_statements = on;"
    " SET client_min_messages = log;"
)


def explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--turns", type=int, default=2000, help="turns of history first")


async def explain(args: argparse.Namespace) -> list[str]:
    """The plans logged for one more turn on ``c0`` after ``--turns`` turns over 50
    conversations: one block per statement, separated by dashes."""
    postgres(args.db, "explain")
    async with scratch_connection(args.db, "explain") as (conn, schema):
        history = Rounds(conn, schema, batch=min(50, max(1, args.turns)))
        for n in range(-(-args.turns // len(history.convs))):
            await history.round(f"h{n}")
        plans: list[str] = []
        conn.add_log_listener(lambda _c, msg: plans.append(msg.message))
        await conn.execute(AUTO_EXPLAIN)
        await Rounds(conn, schema, batch=1).round("explained")
        await conn.execute("SET client_min_messages = notice")
    return [line for plan in plans for line in (plan, "-" * 100)]
