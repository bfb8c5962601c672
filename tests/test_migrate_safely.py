"""PostgreSQL migrations under load: a migration waits at most ``lock_timeout`` for a
table's lock, is tried again, and gives up with ``MigrationBlocked`` having applied nothing
of itself; a ``no-transaction`` migration builds its index CONCURRENTLY, and a build that
failed (an INVALID index left behind) is dropped and built again on the next run; several
migrators at once apply each version once. The later migrations are samples applied to
the test's own schema."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from store import MigrationBlocked, sql
from store.backends.base import lock_key
from store.store import make_backend

from .conftest import Target, asyncpg_dsn

CODE = sql.code_version("postgres")
OWN = sql.migrations("postgres")

ADD_COLUMN = sql.Migration(
    CODE + 1,
    "sample_add_column",
    "-- turnstore: expand\nALTER TABLE turnstore_turns ADD COLUMN sample_note text;\n",
)
SCRATCH = sql.Migration(
    CODE + 1,
    "sample_scratch",
    "-- turnstore: expand\nCREATE TABLE turnstore_scratch (k integer NOT NULL);\n",
)
UNIQUE_INDEX = sql.Migration(
    CODE + 2,
    "sample_unique_index",
    "-- turnstore: expand\n-- turnstore: no-transaction\n"
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS turnstore_scratch_k\n"
    "    ON turnstore_scratch (k);\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS turnstore_turns_sample\n"
    "    ON turnstore_turns (lease_owner);\n",
)


async def _migrate(target: Target, *later: sql.Migration, **options: float) -> list[int]:
    backend = make_backend(target.url, schema=target.schema)
    try:
        return await backend.migrate(known=(*OWN, *later), **options)  # type: ignore[arg-type]
    finally:
        await backend.close()


async def _connect(target: Target) -> asyncpg.Connection:
    conn = await asyncpg.connect(asyncpg_dsn(target.url))
    await conn.execute(f'SET search_path TO "{target.schema}"')
    return conn


async def _versions(conn: asyncpg.Connection) -> list[int]:
    return [r[0] for r in await conn.fetch("SELECT version FROM turnstore_migrations ORDER BY 1")]


async def test_a_migration_blocked_by_a_long_transaction_gives_up_and_applies_nothing(
    pg_target: Target,
) -> None:
    await _migrate(pg_target)
    blocker = await _connect(pg_target)
    probe = await _connect(pg_target)
    try:
        # a long transaction that read the table: ALTER TABLE needs ACCESS EXCLUSIVE
        tx = blocker.transaction()
        await tx.start()
        await blocker.fetch("SELECT 1 FROM turnstore_turns LIMIT 1")
        with pytest.raises(MigrationBlocked, match=rf"{CODE + 1:04d}_sample_add_column"):
            await _migrate(pg_target, ADD_COLUMN, lock_timeout=0.05, attempts=2)
        assert await _versions(probe) == list(range(1, CODE + 1))
        columns = await probe.fetch(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 "
            "AND column_name = 'sample_note'",
            pg_target.schema,
        )
        assert columns == []
        await tx.rollback()
        # the transaction ended: the same migration goes through
        assert await _migrate(pg_target, ADD_COLUMN, lock_timeout=0.05) == [CODE + 1]
        # and no lock_timeout is left on the store's connections
        assert await _migrate(pg_target, ADD_COLUMN) == []
    finally:
        await blocker.close()
        await probe.close()


async def test_a_failed_concurrent_build_is_dropped_and_built_again(pg_target: Target) -> None:
    await _migrate(pg_target, SCRATCH)
    conn = await _connect(pg_target)
    try:
        await conn.execute("INSERT INTO turnstore_scratch VALUES (1), (1), (2)")
        # the unique build fails on the duplicate and leaves an INVALID index behind
        with pytest.raises(asyncpg.UniqueViolationError):
            await _migrate(pg_target, SCRATCH, UNIQUE_INDEX)
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)"
        assert await conn.fetchval(valid, "turnstore_scratch_k") is False
        assert await _versions(conn) == list(range(1, CODE + 2))  # not recorded
        await conn.execute(
            "DELETE FROM turnstore_scratch WHERE ctid IN (SELECT max(ctid) "
            "FROM turnstore_scratch GROUP BY k HAVING count(*) > 1)"
        )
        assert await _migrate(pg_target, SCRATCH, UNIQUE_INDEX) == [CODE + 2]
        assert await conn.fetchval(valid, "turnstore_scratch_k") is True
        assert await conn.fetchval(valid, "turnstore_turns_sample") is True
        with pytest.raises(asyncpg.UniqueViolationError):  # the index is there and enforced
            await conn.execute("INSERT INTO turnstore_scratch VALUES (2)")
        # and nothing of the migrator's session is left: its advisory lock is not held
        key = lock_key(pg_target.schema or "public", "migrations") & (2**64 - 1)
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
            "AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
            key >> 32,
            key & 0xFFFFFFFF,
        )
        assert held == 0
    finally:
        await conn.close()


async def test_concurrent_migrators_apply_a_no_transaction_migration_once(
    pg_target: Target,
) -> None:
    results: list[list[int]] = []

    async def migrate() -> None:
        results.append(await _migrate(pg_target, SCRATCH, UNIQUE_INDEX))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(migrate)
    assert sorted(v for applied in results for v in applied) == list(range(1, CODE + 3))
    store = await pg_target.open(migrate=False)  # an expand-only newer schema serves this code
    await store.close()
