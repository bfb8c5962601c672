"""Applying migrations on PostgreSQL without long locks on busy tables.

* One migrator at a time: an advisory lock on the schema's migration key, taken in each
  migration's own transaction (``pg_advisory_xact_lock``), or for a migration that runs
  outside a transaction for as long as it runs (``pg_advisory_lock``). Each migrator
  reads again, under the lock, whether the version is still missing. A migrator waits
  for the lock by polling (``pg_try_advisory_*``), never inside a statement: a statement
  waiting for the lock holds a snapshot, for which another migrator's ``CREATE INDEX
  CONCURRENTLY`` waits in turn (a deadlock, seen with four migrators at once).
* One transaction per migration, not one for all: a migration's locks are released when
  it commits, and a failure leaves the database at the last version that completed.
* ``lock_timeout``: a statement that cannot get its table's lock within the timeout gives
  up rather than queue, with every query that arrives after it, behind a long transaction
  (a waiting ACCESS EXCLUSIVE request blocks even plain reads). The migration is rolled
  back and tried again after a jittered pause, up to ``attempts`` times, then
  ``MigrationBlocked``.
* ``-- turnstore: no-transaction`` migrations (``CREATE INDEX CONCURRENTLY``) run statement
  by statement in autocommit, without ``lock_timeout`` (their locks block no read or
  write), each idempotent (``IF NOT EXISTS`` / ``IF EXISTS``, which
  tests/test_migration_lint.py requires). A concurrent build that failed (a timeout, a
  duplicate key, a killed migrator) leaves an INVALID index behind: it is dropped and
  built again, and the version is recorded only once every index it built is valid.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from .. import sql
from ..errors import MigrationBlocked, SchemaError
from ..schema_window import SchemaState, from_rows

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS turnstore_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
#: Columns later runners added to the migrations table (older databases lack them).
_BOOKKEEPING_COLUMNS = {"checksum": "text", "code_from": "integer"}
_CONCURRENT_INDEX = re.compile(
    r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\"?[\w$]+\"?)",
    re.IGNORECASE,
)
_RECORD = (
    "INSERT INTO turnstore_migrations (version, name, checksum, code_from) VALUES ($1, $2, $3, $4)"
)
_IS_RECORDED = "SELECT EXISTS (SELECT FROM turnstore_migrations WHERE version = $1)"


async def read_state(driver: asyncpg.Connection) -> SchemaState:
    if await driver.fetchval("SELECT to_regclass('turnstore_migrations')") is None:
        return SchemaState()
    rows = await driver.fetch("SELECT * FROM turnstore_migrations")
    return from_rows([dict(r) for r in rows])


async def migrate(
    driver: asyncpg.Connection,
    *,
    schema: str | None,
    lock: int,
    pgbouncer: bool,
    known: Sequence[sql.Migration],
    upto: int | None,
    lock_timeout: float,
    attempts: int,
) -> list[int]:
    """Apply the migrations of ``known`` (up to ``upto``) that the database lacks; return
    the versions this call applied."""
    if attempts < 1 or lock_timeout <= 0:
        raise ValueError("attempts must be at least 1 and lock_timeout positive")
    done = await _prepare(driver, schema=schema, lock=lock, known=known)
    applied = []
    for migration in known:
        if migration.version in done or (upto is not None and migration.version > upto):
            continue
        if migration.transactional:
            ran = await _in_transaction(driver, migration, lock, lock_timeout, attempts)
        else:
            if pgbouncer:
                raise SchemaError(
                    f"migration {_label(migration)} runs outside a transaction (CREATE INDEX "
                    "CONCURRENTLY) and needs a server session of its own, which PgBouncer's "
                    "transaction pooling cannot give: run `python -m store migrate` against "
                    "the PostgreSQL server directly"
                )
            ran = await _outside_transaction(driver, migration, lock, lock_timeout, attempts)
        if ran:
            applied.append(migration.version)
    return applied


async def _prepare(
    driver: asyncpg.Connection, *, schema: str | None, lock: int, known: Sequence[sql.Migration]
) -> set[int]:
    """The schema and the migrations table (with every bookkeeping column), the checksums
    of versions applied before they were recorded; returns the versions applied."""
    async with _locked_transaction(driver, lock):
        # Whether the schema exists, read from pg_namespace itself: a migrator that waited
        # for the lock above may hold a stale "no such schema" in its catalog cache (a wait
        # for an advisory lock does not refresh it), and would try to create the schema
        # the other migrator just created. Seen behind PgBouncer, where a server
        # connection serves many clients.
        if schema is not None and not await driver.fetchval(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)", schema
        ):
            await driver.execute(f'CREATE SCHEMA "{schema}"')
        if await driver.fetchval("SELECT to_regclass('turnstore_migrations')") is None:
            await driver.execute(_MIGRATIONS_TABLE)
        columns = {
            r[0]
            for r in await driver.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = "
                "'turnstore_migrations'::regclass AND attnum > 0 AND NOT attisdropped"
            )
        }
        for column, kind in _BOOKKEEPING_COLUMNS.items():
            if column not in columns:  # altered only when missing: no lock at every open
                await driver.execute(f"ALTER TABLE turnstore_migrations ADD COLUMN {column} {kind}")
        state = await read_state(driver)
        for migration in sql.check_recorded("postgres", dict(state.checksums), tuple(known)):
            await driver.execute(
                "UPDATE turnstore_migrations SET checksum = $2 WHERE version = $1",
                migration.version,
                migration.checksum,
            )
    return set(state.versions)


async def _in_transaction(
    driver: asyncpg.Connection,
    migration: sql.Migration,
    lock: int,
    lock_timeout: float,
    attempts: int,
) -> bool:
    for attempt in range(1, attempts + 1):
        try:
            async with _locked_transaction(driver, lock):
                if await driver.fetchval(_IS_RECORDED, migration.version):
                    return False  # another migrator applied it while this one waited
                # after the advisory lock: waiting for another migrator is not a timeout
                await driver.execute(f"SET LOCAL lock_timeout = {_ms(lock_timeout)}")
                if migration.has_statements:
                    await driver.execute(migration.sql)
                await _record(driver, migration)
            return True
        except asyncpg.LockNotAvailableError as exc:
            await _pause_or_give_up(migration, attempt, attempts, lock_timeout, exc)
    raise AssertionError("unreachable")


async def _outside_transaction(
    driver: asyncpg.Connection,
    migration: sql.Migration,
    lock: int,
    lock_timeout: float,
    attempts: int,
) -> bool:
    # A session lock, held across the statements' own transactions: no other migrator
    # runs meanwhile, so an INVALID index found here is a failed build, not one in progress
    # (the session of a migrator that died mid-build holds the lock until it ends).
    pause = _Pause()
    while not await driver.fetchval("SELECT pg_try_advisory_lock($1)", lock):
        await pause.wait()
    try:
        if await driver.fetchval(_IS_RECORDED, migration.version):
            return False
        # No lock_timeout here: a concurrent build's lock (SHARE UPDATE EXCLUSIVE) lets
        # reads and writes through, waiting or held, and its waits for older transactions
        # to finish are part of building without blocking them; a timeout would only
        # leave INVALID indexes behind. (A lock_timeout the server sets still applies,
        # and a statement it stops is tried again.)
        for statement in sql.split_postgres(migration.sql):
            await _run_idempotent(driver, migration, statement, lock_timeout, attempts)
        await _record(driver, migration)
        return True
    finally:
        await driver.execute("SELECT pg_advisory_unlock($1)", lock)


async def _run_idempotent(
    driver: asyncpg.Connection,
    migration: sql.Migration,
    statement: str,
    lock_timeout: float,
    attempts: int,
) -> None:
    index = _CONCURRENT_INDEX.match(statement)
    for attempt in range(1, attempts + 1):
        try:
            if index is not None:
                await _drop_if_invalid(driver, index[1])
            await driver.execute(statement)
            if index is not None and await _is_valid(driver, index[1]) is not True:
                raise SchemaError(
                    f"migration {_label(migration)}: index {index[1]} is not valid after its "
                    "build; run `python -m store migrate` again"
                )
            return
        except asyncpg.LockNotAvailableError as exc:
            await _pause_or_give_up(migration, attempt, attempts, lock_timeout, exc)


class _Pause:
    """Growing, jittered pauses between polls of a lock another migrator holds."""

    def __init__(self) -> None:
        self._seconds = 0.02

    async def wait(self) -> None:
        await anyio.sleep(random.uniform(0.5, 1.0) * self._seconds)
        self._seconds = min(self._seconds * 2, 0.5)


def locked_transaction(
    driver: asyncpg.Connection, lock: int
) -> contextlib.AbstractAsyncContextManager[None]:
    """A transaction holding the migration lock, for work a migrator does after the
    migrations (on Citus, distributing the tables: store/citus.py)."""
    return _locked_transaction(driver, lock)


@asynccontextmanager
async def _locked_transaction(driver: asyncpg.Connection, lock: int) -> AsyncIterator[None]:
    """A transaction holding the migration lock (``pg_try_advisory_xact_lock``, polled: a
    transaction that did not get it rolls back and waits outside, holding nothing)."""
    pause = _Pause()
    while True:
        transaction = driver.transaction()
        await transaction.start()
        try:
            got = await driver.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock)
        except BaseException:
            with contextlib.suppress(asyncpg.InterfaceError):
                await transaction.rollback()
            raise
        if got:
            break
        await transaction.rollback()
        await pause.wait()
    try:
        yield
    except BaseException:
        with contextlib.suppress(asyncpg.InterfaceError):
            await transaction.rollback()
        raise
    await transaction.commit()


async def _is_valid(driver: asyncpg.Connection, name: str) -> bool | None:
    """Whether the index ``name`` (in the search path) is valid; None if there is none."""
    return await driver.fetchval(  # type: ignore[no-any-return]
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", name
    )


async def _drop_if_invalid(driver: asyncpg.Connection, name: str) -> None:
    if await _is_valid(driver, name) is False:
        await driver.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


async def _record(driver: asyncpg.Connection, migration: sql.Migration) -> None:
    await driver.execute(
        _RECORD, migration.version, migration.name, migration.checksum, migration.code_from
    )


async def _pause_or_give_up(
    migration: sql.Migration, attempt: int, attempts: int, lock_timeout: float, exc: Any
) -> None:
    if attempt >= attempts:
        raise MigrationBlocked(
            f"migration {_label(migration)} waited {lock_timeout:g} s for a table's lock in "
            f"each of {attempts} attempts ({exc}): long transactions hold it. Nothing of "
            "this migration was applied. Run `python -m store migrate` again in a quieter "
            "moment or with a longer --lock-timeout"
        ) from exc
    # jittered, growing: the transactions in the way get time to finish
    await anyio.sleep(random.uniform(0.5, 1.0) * min(lock_timeout, 1.0) * attempt)


def _ms(seconds: float) -> str:
    return f"'{max(1, round(seconds * 1000))}ms'"


def _label(migration: sql.Migration) -> str:
    return f"{migration.version:04d}_{migration.name}"
