"""SQLite: WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for every write transaction,
which takes the database's single write lock and so serialises writers across
connections and processes. Foreign keys (the deferred pairing checks) are switched on for
every connection.

Writes go through group commit (``store.group_commit``) to one dedicated ``sqlite3``
connection per store (SQLite has one writer at a time anyway): the writes queued at one
moment run in one ``BEGIN IMMEDIATE`` transaction, in one hop to a worker thread, where
each write's code runs straight through (``run_to_end``: its ``Tx`` answers at once). Reads
and migrations use the SQLAlchemy engine (aiosqlite). A thread of its own checkpoints the
WAL, off the writer's path (``sqlite_checkpoint``)."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections import namedtuple
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .. import sql
from ..group_commit import GroupCommit
from ..schema_window import SchemaState, from_rows
from .base import MIGRATION_ATTEMPTS, MIGRATION_LOCK_TIMEOUT, Backend, TxWork
from .sqlite_checkpoint import BACKSTOP_PAGES, Checkpointer
from .tx import Tx

T = TypeVar("T")

_WRITE = "turnstore_write"
_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS turnstore_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
)"""
#: Columns later runners added to the migrations table (older databases lack them).
_BOOKKEEPING_COLUMNS = {"checksum": "TEXT", "code_from": "INTEGER"}


def _configure(execute: Callable[[str], Any], synchronous: str, busy_timeout: float) -> None:
    """Set up a new connection: the busy timeout, WAL, durability, foreign keys."""
    execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    _enter_wal(execute, busy_timeout)
    execute(f"PRAGMA synchronous = {synchronous}")
    execute("PRAGMA foreign_keys = ON")


def _enter_wal(execute: Callable[[str], Any], busy_timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried for up to ``busy_timeout`` seconds. On a new
    database file, connections opened at the same moment (two processes starting) each try
    to switch it; one that would deadlock waiting for the lock the switch needs is told
    "database is locked" at once, not after its busy timeout. Once the file is in WAL mode
    the pragma is a no-op."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "database is locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


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
        _configure(cursor.execute, synchronous, busy_timeout)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@functools.cache
def _row_class(columns: tuple[str, ...]) -> Any:
    # rename=True: an unnamed expression column becomes _0, _1, ... (reached by index)
    return namedtuple("Row", columns, rename=True)


def _named_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Any:
    """Rows with attribute access, as SQLAlchemy's rows have."""
    return _row_class(tuple(d[0] for d in cursor.description))(*row)


class _ThreadTx(Tx):
    """Tx on the writer's ``sqlite3`` connection, in the writer thread: each call runs the
    query at once (SQLite takes the queries' ``:name`` parameters as they are)."""

    def __init__(self, conn: sqlite3.Connection, statements: Mapping[str, str]) -> None:
        self.conn = conn
        self._sql = statements

    async def all(self, name: str, **params: Any) -> Sequence[Any]:
        return self.conn.execute(self._sql[name], params).fetchall()

    async def one(self, name: str, **params: Any) -> Any:
        return self.conn.execute(self._sql[name], params).fetchone()

    async def scalar(self, name: str, **params: Any) -> Any:
        row = self.conn.execute(self._sql[name], params).fetchone()
        return None if row is None else row[0]

    async def run(self, name: str, **params: Any) -> int:
        return self.conn.execute(self._sql[name], params).rowcount

    async def run_many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.conn.executemany(self._sql[name], rows)


def run_to_end(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that awaits nothing that suspends (a ``_ThreadTx`` answers at
    once) to its end, without an event loop."""
    try:
        work.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    work.close()
    raise RuntimeError("a write transaction awaited something other than its Tx")


class SqliteBackend(Backend):
    dialect = "sqlite"

    def __init__(
        self,
        engine: AsyncEngine,
        namespace: str,
        *,
        busy_timeout: float = 30.0,
        synchronous: str = "FULL",
    ) -> None:
        super().__init__(engine, namespace)
        self._write_engine = engine.execution_options(**{_WRITE: True})
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._thread = anyio.CapacityLimiter(1)  # one writer thread at a time
        database = engine.url.database or ""
        self._checkpointer = (
            Checkpointer(database, busy_timeout) if database not in ("", ":memory:") else None
        )
        self._writes: GroupCommit[TxWork[Any], Any] = GroupCommit(
            self._apply, is_connection_error=lambda _exc: False, max_concurrent=1
        )

    def group_commit(self) -> GroupCommit[Any, Any]:
        return self._writes

    async def transaction(self, conversation_id: str, work: TxWork[T], *, linger: float = 0.0) -> T:
        return await self._writes.submit(work, linger=linger)  # type: ignore[no-any-return]

    async def _apply(self, batch: Sequence[TxWork[Any]]) -> list[Any]:
        return await anyio.to_thread.run_sync(self._apply_in_thread, batch, limiter=self._thread)

    def _apply_in_thread(self, batch: Sequence[TxWork[Any]]) -> list[Any]:
        conn = self._writer()
        tx = _ThreadTx(conn, self.statements_text)
        conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[Any] = [run_to_end(work(tx)) for work in batch]
            conn.execute("COMMIT")  # may raise: a deferred pairing check refused the batch
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return results

    @property
    def checkpointer(self) -> Checkpointer | None:
        """The thread that copies the WAL back into the database file (None: the writer
        checkpoints itself), for tests and tools to watch."""
        return self._checkpointer

    def writer_connection(self) -> sqlite3.Connection:
        """The connection the writer thread commits on (made on first use), for tests and
        tools to inspect or instrument (a progress handler) between writes: it is the
        writer's, not the caller's."""
        return self._writer()

    def _writer(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.engine.url.database or "",
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # used by one worker thread at a time
            )
            conn.row_factory = _named_row
            _configure(conn.execute, self._synchronous, self._busy_timeout)
            if self._checkpointer is not None:  # the checkpointer thread does it
                conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await anyio.to_thread.run_sync(conn.close, limiter=self._thread)
        if self._checkpointer is not None:
            await anyio.to_thread.run_sync(self._checkpointer.close)
        await super().close()

    async def applied_versions(self) -> list[int]:
        return list((await self.schema_state()).versions)

    async def schema_state(self) -> SchemaState:
        async with self.engine.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM sqlite_master WHERE name = 'turnstore_migrations'")
            )
            if not exists:
                return SchemaState()
            rows = await conn.execute(text("SELECT * FROM turnstore_migrations"))
            return from_rows([dict(r._mapping) for r in rows])

    async def migrate(
        self,
        *,
        upto: int | None = None,
        known: Sequence[sql.Migration] | None = None,
        lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
        attempts: int = MIGRATION_ATTEMPTS,
    ) -> list[int]:
        """All missing migrations in one ``BEGIN IMMEDIATE`` transaction: SQLite has one
        writer at a time anyway, and its busy timeout (not ``lock_timeout``) bounds the
        wait for it. ``-- turnstore: no-transaction`` means nothing here."""
        known = tuple(known if known is not None else sql.migrations(self.dialect))
        applied: list[int] = []
        async with self._write_engine.begin() as conn:
            await conn.exec_driver_sql(_MIGRATIONS_TABLE)
            columns = {
                r.name
                for r in await conn.exec_driver_sql("PRAGMA table_info(turnstore_migrations)")
            }
            for column, kind in _BOOKKEEPING_COLUMNS.items():
                if column not in columns:
                    await conn.exec_driver_sql(
                        f"ALTER TABLE turnstore_migrations ADD COLUMN {column} {kind}"
                    )
            done = {
                r.version: r.checksum
                for r in await conn.exec_driver_sql(
                    "SELECT version, checksum FROM turnstore_migrations"
                )
            }
            for migration in sql.check_recorded(self.dialect, done, known):
                await conn.exec_driver_sql(
                    "UPDATE turnstore_migrations SET checksum = ? WHERE version = ?",
                    (migration.checksum, migration.version),
                )
            for migration in known:
                if migration.version in done or (upto is not None and migration.version > upto):
                    continue
                for statement in split_statements(migration.sql):
                    await conn.exec_driver_sql(statement)
                await conn.exec_driver_sql(
                    "INSERT INTO turnstore_migrations (version, name, checksum, code_from) "
                    "VALUES (?, ?, ?, ?)",
                    (migration.version, migration.name, migration.checksum, migration.code_from),
                )
                applied.append(migration.version)
        return applied

    def is_connection_error(self, exc: BaseException) -> bool:
        return False

    def is_rolled_back(self, exc: BaseException) -> bool:
        # SQLITE_BUSY past the busy timeout: the write transaction was rolled back.
        return isinstance(exc, sqlite3.OperationalError) and (
            "database is locked" in str(exc) or "database is busy" in str(exc)
        )

    def translate(self, exc: BaseException) -> BaseException:
        from ..errors import IntegrityViolation

        if isinstance(exc, sqlite3.IntegrityError):
            return IntegrityViolation(f"the database refused the write: {exc}")
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
