"""The schema: both dialects hold the same tables and constraints; migrations apply in
order, once, even when several processes migrate at once."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import pytest
from sqlalchemy import inspect

from store import SchemaError, Store, hooks, sql
from store.store import make_backend

from .conftest import Target, asyncpg_dsn

# SQLite's child-key indexes for its foreign-key checks (sqlite/0004_child_key_indexes.sql);
# PostgreSQL never looks foreign keys up from the child side on insert.
SQLITE_ONLY_INDEXES = {
    "turnstore_messages_prev_key",
    "turnstore_messages_chain_key",
    "turnstore_messages_last_call_key",
}


def _shape(sync_conn: Any) -> dict[str, Any]:
    insp = inspect(sync_conn)
    shape: dict[str, Any] = {}
    for table in sorted(t for t in insp.get_table_names() if t.startswith("turnstore_")):
        indexes = insp.get_indexes(table)
        # Uniqueness counts, not its form: PostgreSQL keeps some of it in partial unique
        # indexes (0002_stable_plans.sql), where SQLite keeps table constraints.
        unique = sorted(
            {tuple(u["column_names"]) for u in insp.get_unique_constraints(table)}
            | {tuple(ix["column_names"]) for ix in indexes if ix["unique"]}
        )
        shape[table] = {
            "columns": sorted(c["name"] for c in insp.get_columns(table)),
            "primary_key": insp.get_pk_constraint(table)["constrained_columns"],
            "unique": unique,
            "foreign_keys": sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                )
                for fk in insp.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (ix["name"], tuple(ix["column_names"]))
                for ix in indexes
                if not ix["unique"] and ix["name"] not in SQLITE_ONLY_INDEXES
            ),
            # Explicitly named CHECKs (PostgreSQL also names column checks after the table;
            # SQLite's inspector sees only the named ones).
            "named_checks": sorted(
                c["name"]
                for c in insp.get_check_constraints(table)
                if c.get("name") and not c["name"].startswith(f"{table}_")
            ),
        }
    return shape


async def _schema_of(target: Target) -> dict[str, Any]:
    store = await target.open()
    try:
        async with hooks.backend(store).engine.connect() as conn:
            return await conn.run_sync(_shape)
    finally:
        await store.close()


async def test_both_dialects_hold_the_same_tables_and_constraints(
    tmp_path: Any, pg_target: Target
) -> None:
    lite = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'shape.db'}", None)
    sqlite_shape = await _schema_of(lite)
    postgres_shape = await _schema_of(pg_target)
    assert set(sqlite_shape) == {
        "turnstore_conversations",
        "turnstore_turns",
        "turnstore_messages",
        "turnstore_staged_steps",
        "turnstore_migrations",
        # version 10: a session's pop and clear marks, its writes, erasures in progress
        "turnstore_session_marks",
        "turnstore_session_writes",
        "turnstore_erasures",
        # version 11: usage reports (tokens and cost) per turn and step
        "turnstore_usage",
    }
    assert sqlite_shape == postgres_shape
    messages = postgres_shape["turnstore_messages"]
    assert len(messages["foreign_keys"]) == 4  # turn + the three pairing/density keys
    assert messages["named_checks"] == ["turnstore_message_shape"]


def test_migrations_are_numbered_in_order_for_both_dialects() -> None:
    for dialect in sql.DIALECTS:
        versions = [m.version for m in sql.migrations(dialect)]
        assert versions == list(range(1, len(versions) + 1))
    assert [m.name for m in sql.migrations("postgres")] == [
        m.name for m in sql.migrations("sqlite")
    ]


def test_both_dialects_define_the_same_queries() -> None:
    postgres = set(sql.queries("postgres"))
    # PostgreSQL only: its advisory lock, and history in one statement for asyncpg
    assert postgres - set(sql.queries("sqlite")) == {"lock_conversation", "history_window_driver"}
    assert set(sql.queries("sqlite")) <= postgres


async def test_concurrent_migrations_apply_each_version_once(target: Target) -> None:
    results: list[list[int]] = []

    async def migrate() -> None:
        backend = make_backend(target.url, schema=target.schema)
        try:
            results.append(await backend.migrate())
        finally:
            await backend.close()

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(migrate)
    everything = [m.version for m in sql.migrations(target.kind)]
    assert sorted(v for applied in results for v in applied) == everything
    store = await target.open(migrate=False)  # the schema is complete
    await store.close()


async def test_opening_without_migrating_an_empty_database_says_what_to_do(
    target: Target,
) -> None:
    with pytest.raises(SchemaError, match="migrate"):
        await Store.open(target.url, schema=target.schema, migrate=False)


async def test_large_messages_are_compressed_with_lz4_where_the_server_has_it(
    pg_target: Target,
) -> None:
    store = await pg_target.open()
    await store.close()
    conn = await asyncpg.connect(asyncpg_dsn(pg_target.url))
    try:
        methods = await conn.fetchval(
            "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        rows = await conn.fetch(
            "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = $1::regclass"
            " AND attname IN ('content', 'tool_arguments', 'tool_call_data')",
            f"{pg_target.schema}.turnstore_messages",
        )
    finally:
        await conn.close()
    expected = b"l" if "lz4" in methods else b"\x00"  # else: the server's default, pglz
    assert {r["attname"]: r["attcompression"] for r in rows} == {
        "content": expected, "tool_arguments": expected, "tool_call_data": expected,
    }  # fmt: skip
