"""SQLite through aiosqlite: WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for every write
transaction, which takes the database's single write lock and so serialises writers
across connections and processes. Foreign keys (the deferred pairing checks) are switched
on for every connection."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .. import sql
from .base import Backend, Tx

_WRITE = "turnstore_write"
_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS turnstore_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
)"""


def create_engine(url: URL, busy_timeout: float, synchronous: str, pool_size: int) -> AsyncEngine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, connect_args={"timeout": busy_timeout}
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how each transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class SqliteBackend(Backend):
    dialect = "sqlite"

    def __init__(self, engine: AsyncEngine, namespace: str) -> None:
        super().__init__(engine, namespace)
        self._write_engine = engine.execution_options(**{_WRITE: True})
        # SQLite has one writer at a time. Writers of this process queue here, first come
        # first served, instead of in SQLite's busy handler, which sleeps (up to 100 ms a
        # time) between retries; other processes still meet the busy timeout.
        self._writer = anyio.Lock()

    @asynccontextmanager
    async def write(self, conversation_id: str) -> AsyncIterator[Tx]:
        async with self._writer, self._write_engine.begin() as conn:
            yield Tx(conn, self.statements)

    async def applied_versions(self) -> list[int]:
        async with self.engine.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM sqlite_master WHERE name = 'turnstore_migrations'")
            )
            if not exists:
                return []
            rows = await conn.execute(text("SELECT version FROM turnstore_migrations"))
            return sorted(r[0] for r in rows)

    async def migrate(self) -> list[int]:
        applied: list[int] = []
        async with self._write_engine.begin() as conn:
            await conn.exec_driver_sql(_MIGRATIONS_TABLE)
            done = {
                r[0] for r in await conn.exec_driver_sql("SELECT version FROM turnstore_migrations")
            }
            for migration in sql.migrations(self.dialect):
                if migration.version in done:
                    continue
                for statement in split_statements(migration.sql):
                    await conn.exec_driver_sql(statement)
                await conn.exec_driver_sql(
                    "INSERT INTO turnstore_migrations (version, name) VALUES (?, ?)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
        return applied

    def is_connection_error(self, exc: BaseException) -> bool:
        return False

    def translate(self, exc: BaseException) -> BaseException:
        from ..errors import IntegrityViolation

        if isinstance(exc, OperationalError) and "constraint" in str(exc.orig).lower():
            return IntegrityViolation(f"the database refused the write: {exc.orig}")
        return super().translate(exc)


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (triggers keep their inner ``;``)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            stripped = "\n".join(
                ln for ln in current.splitlines() if not ln.strip().startswith("--")
            ).strip()
            if stripped:
                statements.append(stripped)
            current = ""
    if current.strip() and any(
        not ln.strip().startswith("--") and ln.strip() for ln in current.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {current!r}")
    return statements
