"""PostgreSQL's plans for every statement a write runs stay bounded to one conversation
(or one turn), with the generic plans that a connection caches and keeps (the foreign-key
checks' plans for its whole life), on a schema never analyzed and on one analyzed while
small (where the planner would rather scan whole tables: see ``server_settings``).

Version 1 of the schema let the planner serve the deferred pairing checks and the
next-position read with the (conversation_id, tool_call_id) index, filtering on position:
every write scanned its whole conversation until autovacuum first analyzed the table.
See schema/postgres/0002_stable_plans.sql.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest

from store import sql
from store.backends.postgres import as_record, server_settings
from store.backends.records import ClaimRequest, StepWrite, TurnEnd

from .conftest import Target, asyncpg_dsn
from .helpers import step

APPLY = "SELECT * FROM turnstore_apply($1::turnstore_write[])"
# The checker reads whole tables on purpose.
WHOLE_TABLE_READS = {"check_messages", "check_turns", "turns_by_status"}
# Erasing a conversation (store/erase.py) deletes all of it, on purpose.
WHOLE_CONVERSATION = {"erase_messages"}
# A filter on one of these means an index walked rows that a key lookup would have skipped.
KEY_COLUMNS = ("position", "tool_call_id", "idempotency_key", "content_hash")
BOUNDING = ("conversation_id", "(id =", "turn_id")
INDEX_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


def _nodes(plan: dict[str, Any], limited: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every node of ``plan``, and whether a Limit above it stops the scan early."""
    yield plan, limited
    limited = limited or plan["Node Type"] == "Limit"
    for child in plan.get("Plans", ()):
        yield from _nodes(child, limited)


def unbounded(plan: dict[str, Any], *, whole_conversation_ok: bool = False) -> list[str]:
    """The scans of turnstore tables in ``plan`` that are not bounded by a key.

    A scan of the messages table bounded by its conversation alone reads the whole history
    unless a Limit stops it (as ``max(position)`` planned as an aggregate over the
    conversation does); only reads of history (``whole_conversation_ok``) may do that.
    """
    bad = []
    for node, limited in _nodes(plan):
        relation = node.get("Relation Name", "")
        index = node.get("Index Name", "")
        if not (relation.startswith("turnstore_") or index.startswith("turnstore_")):
            continue
        kind = node["Node Type"]
        condition = node.get("Index Cond", "")
        where = node.get("Filter", "")
        label = f"{kind} on {relation or index} cond={condition!r} filter={where!r}"
        bounded = any(b in condition for b in BOUNDING)
        walks_keys = any(column in where for column in KEY_COLUMNS)
        whole_history = (
            (relation == "turnstore_messages" or index.startswith("turnstore_messages"))
            and not any(column in condition for column in (*KEY_COLUMNS, "turn_id"))
            and not limited
        )
        if kind == "Seq Scan" or (kind in INDEX_SCANS and (not bounded or walks_keys)):
            bad.append(label)
        elif kind in INDEX_SCANS and whole_history and not whole_conversation_ok:
            bad.append(f"{label} (the whole conversation)")
    return bad


async def _connect(target: Target) -> asyncpg.Connection:
    """A connection with the session settings of the store's own connections."""
    return await asyncpg.connect(
        asyncpg_dsn(target.url), server_settings=server_settings(target.schema)
    )


def _numbered(text: str) -> tuple[str, list[str]]:
    """A named query with ``$1, $2, ...`` for its ``:name`` parameters, and the names."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"(?<!:):([a-z_]+)", number, text), names


def _claim(turn_id: str, key: str | None, *, first: bool = True) -> ClaimRequest:
    return ClaimRequest(
        lock_key=1, conversation_id="c", turn_id=turn_id, idempotency_key=key,
        content_hash=f"hash-{key}",
        content_json='[{"type":"text","text":"go"}]', owner="test", lease_seconds=30,
        window_seconds=10, fail_when_busy=False, first=first, retry=False,
    )  # fmt: skip


def _step(turn_id: str, epoch: int, position: int) -> StepWrite:
    return StepWrite(
        lock_key=1, conversation_id="c", turn_id=turn_id, epoch=epoch, lease_seconds=30,
        step=1, position=position, content_json="[]",
        call_ids=[f"{turn_id}_a", f"{turn_id}_b"], tool_names=["t", "t"],
        arguments_json=["{}", "{}"], call_data_json=[None, None],
        results_json=["[]", "[]"], is_error=[False, False],
    )  # fmt: skip


def _end(turn_id: str, epoch: int, final: StepWrite | None) -> TurnEnd:
    return TurnEnd(
        lock_key=1, conversation_id="c", turn_id=turn_id, epoch=epoch, status="finished",
        error=None, final=final, lease_seconds=30,
    )  # fmt: skip


async def _explaining(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Log the generic plan of every statement ``conn`` runs, nested ones included, into
    the list returned."""
    plans: list[dict[str, Any]] = []
    conn.add_log_listener(
        lambda _c, message: plans.append(json.loads(message.message.split("plan:", 1)[1])["Plan"])
    )
    await conn.execute(
        "LOAD 'auto_explain';"
        " SET auto_explain.log_min_duration = 0;"
        " SET auto_explain.log_nested_statements = on;"
        " SET auto_explain.log_format = json;"
        " SET auto_explain.log_level = notice;"
        " SET plan_cache_mode = force_generic_plan;"
    )
    return plans


@pytest.mark.parametrize("statistics", ["never analyzed", "analyzed when small"])
async def test_writes_plan_bounded_lookups_whatever_the_statistics(
    pg_target: Target, statistics: str
) -> None:
    store = await pg_target.open()  # a fresh schema
    if statistics == "analyzed when small":  # as autovacuum does after 50 rows
        for n in range(12):
            turn = await store.begin_turn(f"small{n % 3}", f"prompt {n}")
            await turn.commit_step(*step(f"small{n}"))
            await turn.finish()
    await store.close()
    conn = await _connect(pg_target)
    try:
        if statistics == "analyzed when small":
            await conn.execute("ANALYZE")
        plans = await _explaining(conn)

        async def apply(write: ClaimRequest | StepWrite | TurnEnd) -> asyncpg.Record:
            (row,) = await conn.fetch(APPLY, [as_record(write)])
            return row

        a = await apply(_claim("turn_a", "key-a"))
        assert a["outcome"] == "claimed"
        assert (await apply(_claim("turn_a2", "key-a")))["outcome"] == "duplicate"
        assert (await apply(_claim("turn_b", None)))["outcome"] == "queued"
        assert (await apply(_claim("turn_b", None, first=False)))["outcome"] == "queued"
        assert (await apply(_step("turn_a", a["epoch"], a["next_position"])))["outcome"] is None
        end = _end("turn_a", a["epoch"], None)
        assert (await apply(end))["outcome"] is None
        b = await apply(_claim("turn_b", None, first=False))
        assert b["outcome"] == "claimed"
        last = _end("turn_b", b["epoch"], _step("turn_b", b["epoch"], b["next_position"]))
        assert (await apply(last))["outcome"] is None
        assert len(plans) > 20  # the functions' statements and the foreign-key checks
        problems = [problem for plan in plans for problem in unbounded(plan)]
        assert problems == []
    finally:
        await conn.close()


async def test_batches_plan_bounded_lookups(pg_target: Target) -> None:
    """A batch of more than one write checks its fences and ends its turns with one
    statement each, joined to the turns by id and conversation (0008_batched_fences.sql)."""
    store = await pg_target.open()
    await store.close()
    conn = await _connect(pg_target)
    try:
        plans = await _explaining(conn)

        async def apply(*writes: ClaimRequest | StepWrite | TurnEnd) -> list[asyncpg.Record]:
            rows = await conn.fetch(APPLY, [as_record(w) for w in writes])
            return sorted(rows, key=lambda row: row["ord"])

        claims = [replace(_claim(f"turn_{c}", f"key-{c}"), conversation_id=c) for c in "xyz"]
        started = await apply(*claims)
        assert [row["outcome"] for row in started] == ["claimed"] * 3

        def step_of(c: str, row: asyncpg.Record, step: int) -> StepWrite:
            first = replace(_step(row["turn_id"], row["epoch"], row["next_position"]),
                            conversation_id=c)  # fmt: skip
            if step == 1:
                return first
            ids = [f"{i}_{step}" for i in first.call_ids]
            return replace(first, step=step, position=first.position + 3, call_ids=ids)

        turns = list(zip("xyz", started, strict=True))
        steps = [step_of(c, row, 1) for c, row in turns]
        assert [row["outcome"] for row in await apply(*steps)] == [None] * 3
        ends = [
            replace(_end(row["turn_id"], row["epoch"], final), conversation_id=c)
            for (c, row), final in zip(turns, [step_of("x", started[0], 2),
                                               step_of("y", started[1], 2), None], strict=True)
        ]  # fmt: skip
        assert [row["outcome"] for row in await apply(*ends)] == [None] * 3
        fences = [p for p in plans if "turnstore_turns" in json.dumps(p)]
        assert len(fences) > 5
        problems = [problem for plan in plans for problem in unbounded(plan)]
        assert problems == []
    finally:
        await conn.close()


async def test_named_queries_plan_bounded_lookups_before_any_analyze(pg_target: Target) -> None:
    store = await pg_target.open()
    await store.close()
    conn = await _connect(pg_target)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        problems: dict[str, list[str]] = {}
        for name, text in sql.queries("postgres").items():
            if name in WHOLE_TABLE_READS or "$1" in text:
                continue
            numbered, names = _numbered(text)
            await conn.execute(f"PREPARE q AS {numbered}")
            try:
                args = ", ".join(["NULL"] * len(names))
                rows = await conn.fetch(f"EXPLAIN (FORMAT JSON) EXECUTE q({args})" if names
                                        else "EXPLAIN (FORMAT JSON) EXECUTE q")  # fmt: skip
            finally:
                await conn.execute("DEALLOCATE q")
            found = unbounded(
                json.loads(rows[0][0])[0]["Plan"], whole_conversation_ok=name in WHOLE_CONVERSATION
            )
            if found:
                problems[name] = found
        assert problems == {}
    finally:
        await conn.close()


def test_the_check_flags_a_scan_of_a_whole_conversation() -> None:
    """The check itself: version 1's plan for a foreign-key check is flagged."""
    plan = {
        "Node Type": "LockRows",
        "Plans": [{
            "Node Type": "Index Scan", "Relation Name": "turnstore_messages",
            "Index Name": "turnstore_messages_conversation_id_tool_call_id_key",
            "Index Cond": "(conversation_id = $1)", "Filter": '("position" = $2)',
        }],
    }  # fmt: skip
    assert unbounded(plan) != []
    plan["Plans"][0]["Index Cond"] = '((conversation_id = $1) AND ("position" = $2))'
    del plan["Plans"][0]["Filter"]
    assert unbounded(plan) == []
    assert unbounded({"Node Type": "Seq Scan", "Relation Name": "turnstore_turns"}) != []


def test_the_check_flags_max_position_planned_over_the_whole_conversation() -> None:
    """A generic plan made while the table looked small: ``max(position)`` as an aggregate
    over every message of the conversation, not a backward scan stopped after one row."""
    scan = {
        "Node Type": "Index Only Scan", "Relation Name": "turnstore_messages",
        "Index Name": "turnstore_messages_pkey", "Index Cond": "(conversation_id = $2)",
    }  # fmt: skip
    assert unbounded({"Node Type": "Aggregate", "Plans": [scan]}) != []
    assert unbounded({"Node Type": "Aggregate", "Plans": [scan]}, whole_conversation_ok=True) == []
    limited = {"Node Type": "Result", "Plans": [{"Node Type": "Limit", "Plans": [scan]}]}
    assert unbounded(limited) == []
