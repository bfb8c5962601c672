"""The schema: both dialects hold the same tables and constraints; migrations apply in
order, once, even when several processes migrate at once."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import pytest
from sqlalchemy import inspect

from store import SchemaError, Store, StoreConfig, hooks, sql
from store.store import make_backend

from .conftest import Target, asyncpg_dsn
from .helpers import assert_clean

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
    await target.migrate()  # contract migrations too
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
    # The one difference: PostgreSQL's turns are keyed by (id, conversation_id) alone, the
    # unique key they always had, so that they can be sharded by conversation; SQLite's keep
    # their primary key on id too (sqlite/0015_keys_by_conversation_contract.sql).
    assert postgres_shape["turnstore_turns"]["primary_key"] == []
    assert sqlite_shape["turnstore_turns"]["primary_key"] == ["id"]
    assert ("id", "conversation_id") in postgres_shape["turnstore_turns"]["unique"]
    sqlite_shape["turnstore_turns"]["primary_key"] = []
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
    # PostgreSQL only: its advisory lock (on one server, and on the node holding the
    # conversation when sharded), and history in one statement for asyncpg
    assert postgres - set(sql.queries("sqlite")) == {
        "lock_conversation",
        "lock_conversation_sharded",
        "history_window_driver",
    }
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


@pytest.mark.parametrize("deploy", ["during", "after"])
async def test_a_version_11_database_migrates_with_nothing_lost(
    target: Target, monkeypatch: pytest.MonkeyPatch, deploy: str
) -> None:
    """Versions 12 to 15 re-key staged steps and usage by conversation: a database of
    version 11 with a checkpointed turn and usage keeps every row, and its staged step takes
    its turn's conversation (the turn that takes over commits it). During a deploy the
    schema is at 14 (15, a contract migration, waits until no process of release 11 runs),
    where release 11's code still inserts a staged step without its conversation: 12's
    trigger gives it its turn's, and this code runs there. After it, every migration."""
    every = sql.migrations(target.dialect)
    monkeypatch.setattr(sql, "migrations", lambda dialect: every[:11])
    old = await target.open(config=StoreConfig(lease_seconds=0.3))
    try:
        assert await hooks.backend(old).applied_versions() == list(range(1, 12))
    finally:
        await old.close()
    monkeypatch.setattr(sql, "migrations", lambda dialect: every)
    now = "now()" if target.dialect == "postgres" else "0"
    payload = (
        '{"content": [{"type": "text", "text": "half way"}], "calls": [{"id": "k", '
        '"name": "insertHtml", "arguments": {}, "provider_data": null}], '
        '"results": [{"call_id": "k", "content": "ran", "is_error": false}]}'
    )
    await target.raw_execute(
        "INSERT INTO turnstore_conversations (id, epoch) VALUES ('c', 1)",
        "INSERT INTO turnstore_turns (id, conversation_id, content_hash, status, epoch, "
        f"lease_owner, lease_expires_at) VALUES ('t1', 'c', 'h', 'running', 1, 'gone', {now})",
        "INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step, "
        "step_position, tool_call_count, content) VALUES ('c', 0, 'user', 't1', 0, 0, 0, '[]')",
        "INSERT INTO turnstore_usage (turn_id, seq, conversation_id, usage_id, prompt_tokens) "
        "VALUES ('t1', 1, 'c', 'u1', 7)",
    )
    # release 11's staged step: no conversation, its upsert on (turn_id, step)
    staged_by_release_11 = (
        "INSERT INTO turnstore_staged_steps (turn_id, step, payload) "
        f"VALUES ('t1', 1, '{payload}') ON CONFLICT (turn_id, step) DO UPDATE "
        "SET payload = excluded.payload"
    )
    if deploy == "during":
        backend = make_backend(target.url, schema=target.schema)
        try:
            await backend.migrate(upto=sql.needed_version(target.dialect))
        finally:
            await backend.close()
        await target.raw_execute(staged_by_release_11)
        versions = [m.version for m in every if m.version <= sql.needed_version(target.dialect)]
    else:
        await target.raw_execute(staged_by_release_11)
        await target.migrate()
        versions = [m.version for m in every]
    store = await target.open(config=StoreConfig(lease_seconds=30), migrate=False)
    try:
        assert await hooks.backend(store).applied_versions() == versions
        async with hooks.backend(store).read() as tx:
            staged = await tx.scalar("staged_step", conversation_id="c", turn_id="t1", step=1)
            usage = await tx.all("usage_of_turn", turn_id="t1")
        assert staged is not None
        assert [(u.usage_id, u.prompt_tokens) for u in usage] == [("u1", 7)]
        successor = await store.begin_turn("c", "next")  # takes over t1, commits its step
        await successor.finish()
        roles = [(m.role, m.turn_id) for m in await store.history("c")]
        assert roles == [
            ("user", "t1"),
            ("assistant", "t1"),
            ("tool", "t1"),
            ("user", successor.id),
        ]
        await assert_clean(store)
    finally:
        await store.close()
