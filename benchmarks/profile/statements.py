"""``statement-cost``: what one statement's set-up costs on turnstore's tables, against the
rows it writes (PostgreSQL).

PostgreSQL reads a table's CHECK constraints and generated columns back from their stored
form and prepares them at every execution of a statement that writes the table, whatever
the number of rows. This measures it inside the server, in a DO block (no round trips),
one transaction per loop, ``synchronous_commit`` off:

* INSERTs of 1, 4 and 30 rows into copies of ``turnstore_messages``: with its CHECK
  constraints and generated columns, with the generated columns only, and with neither;
* UPDATEs of eight running turns of ``turnstore_turns`` (as turnstore_apply's fences
  do): eight single-row statements against one statement for the eight
  (schema/postgres/0008_batched_fences.sql).

Figures are wall time per statement or per row, in the server, on an otherwise idle
database: compare them with each other, within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import asyncpg

from .fixtures import postgres, scratch_connection

TABLES = {
    "checks and generated columns": "(LIKE turnstore_messages INCLUDING ALL)",
    "generated columns only": (
        "(LIKE turnstore_messages INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING INDEXES)"
    ),
    "neither": "(LIKE turnstore_messages INCLUDING DEFAULTS INCLUDING INDEXES)",
}
INSERT_LOOP = """DO $$ BEGIN FOR i IN 1..{loops} LOOP
    INSERT INTO {table} (conversation_id, position, role, turn_id, step, step_position,
                         tool_call_count, content)
    SELECT 'c{tag}', i * 100 + g, 'assistant', 't', 1, i * 100 + g, 0,
           '[{{"type":"text","text":"x"}}]'::jsonb
      FROM generate_series(1, {rows}) AS g;
    COMMIT;
END LOOP; END $$"""
TURNS = """
INSERT INTO turnstore_conversations (id, epoch) SELECT 'c' || g, 1 FROM generate_series(1, 8) g;
INSERT INTO turnstore_turns (id, conversation_id, content_hash, status, epoch, lease_owner,
                             lease_expires_at, created_at, started_at)
SELECT 't' || g, 'c' || g, 'h', 'running', 1, 'o', now() + interval '1 hour', now(), now()
  FROM generate_series(1, 8) g"""
FENCES_ONE_BY_ONE = """DO $$ BEGIN FOR i IN 1..{loops} LOOP
    FOR g IN 1..8 LOOP
        UPDATE turnstore_turns t
           SET steps = t.steps + 1, lease_expires_at = now() + make_interval(secs => 30)
         WHERE t.id = 't' || g AND t.conversation_id = 'c' || g AND t.epoch = 1
           AND t.status = 'running';
    END LOOP;
    COMMIT;
END LOOP; END $$"""
FENCES_AT_ONCE = """DO $$
DECLARE
    ids   text[] := array(SELECT 't' || g FROM generate_series(1, 8) g);
    convs text[] := array(SELECT 'c' || g FROM generate_series(1, 8) g);
BEGIN FOR i IN 1..{loops} LOOP
    UPDATE turnstore_turns t
       SET steps = t.steps + 1, lease_expires_at = now() + make_interval(secs => 30)
      FROM unnest(ids, convs) AS u(id, conversation_id)
     WHERE t.id = ANY (ids) AND t.conversation_id = ANY (convs)
       AND t.id = u.id AND t.conversation_id = u.conversation_id AND t.epoch = 1
       AND t.status = 'running';
    COMMIT;
END LOOP; END $$"""


def _rows(n: int) -> str:
    return f"{n:2d} row" if n == 1 else f"{n:2d} rows"


async def _timed(conn: asyncpg.Connection, sql: str) -> float:
    started = time.perf_counter()
    await conn.execute(sql)
    return time.perf_counter() - started


async def measure(url: str, loops: int, repeat: int) -> dict[str, list[float]]:
    """µs per statement (INSERTs, by table and rows) and per turn row (UPDATEs), one value
    per repeat."""
    seen: dict[str, list[float]] = {}
    async with scratch_connection(url, "statement_cost") as (conn, _schema):
        for n, definition in enumerate(TABLES.values()):
            await conn.execute(f"CREATE TABLE copy_{n} {definition}")
        await conn.execute(TURNS)
        for r in range(repeat):
            for rows in (1, 4, 30):
                count = loops if rows < 30 else max(1, loops // 5)
                for n, name in enumerate(TABLES):
                    sql = INSERT_LOOP.format(loops=count, table=f"copy_{n}", tag=f"{r}_{rows}",
                                             rows=rows)  # fmt: skip
                    spent = await _timed(conn, sql)
                    seen.setdefault(f"INSERT of {_rows(rows)}, {name}", []).append(
                        spent / count * 1e6
                    )
            for label, sql in (("8 single-row UPDATEs", FENCES_ONE_BY_ONE),
                               ("1 UPDATE of 8 rows", FENCES_AT_ONCE)):  # fmt: skip
                spent = await _timed(conn, sql.format(loops=loops))
                seen.setdefault(f"fences: {label}, per row", []).append(spent / loops / 8 * 1e6)
    return seen


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loops", type=int, default=2000, help="statements a run")
    p.add_argument("--repeat", type=int, default=3, help="runs")


async def run(args: argparse.Namespace) -> list[str]:
    postgres(args.db, "statement-cost")
    seen = await measure(args.db, args.loops, args.repeat)
    lines = [f"µs in the server, median of {args.repeat} runs (the runs in brackets):"]
    for label, values in seen.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"  {label:58s} {statistics.median(values):7.1f}  ({runs})")
    return lines
