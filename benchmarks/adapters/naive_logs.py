"""The naive design's one write, per backend: read ``max(position) + 1``, then insert the
event there, each statement on its own (autocommit), no lock."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import aiosqlite
import anyio
import asyncpg

from ..checker import CheckRow
from ..dbtarget import drop_pg_schema, parse_db_url, remove_sqlite_files
from ..readback import read_ai_messages_pg, read_ai_messages_sqlite
from . import instatic_rows as rows_
from . import pg_ai_messages as pg
from . import sqlite_ai_messages as lite
from .base import PreloadTurn


class PositionTaken(Exception):
    """Another writer inserted at the position read (a unique violation)."""


class EventLog(Protocol):
    async def setup(self, url: str, schema: str, pool_size: int) -> None: ...
    async def teardown(self) -> None: ...
    async def preload(self, turns: Iterable[PreloadTurn]) -> None: ...
    async def append(self, conversation_id: str, row: rows_.Row) -> None: ...
    async def read_back(self) -> list[CheckRow]: ...


class PgEventLog:
    _pool: asyncpg.Pool | None = None
    _dsn = ""
    _schema = ""

    async def setup(self, url: str, schema: str, pool_size: int) -> None:
        dsn = parse_db_url(url).asyncpg_dsn
        assert dsn is not None
        self._dsn, self._schema = dsn, schema
        self._pool = await pg.open_pool(dsn, schema, pool_size)

    async def teardown(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._schema:
            await drop_pg_schema(self._dsn, self._schema)

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        assert self._pool is not None
        await pg.bulk_preload(self._pool, self._schema, turns, {})

    async def append(self, conversation_id: str, row: rows_.Row) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            position = await conn.fetchval(pg.NEXT_POSITION, conversation_id)
            try:
                await conn.execute(pg.INSERT, conversation_id, position, *row)
            except asyncpg.UniqueViolationError as exc:
                raise PositionTaken from exc

    async def read_back(self) -> list[CheckRow]:
        return await read_ai_messages_pg(self._dsn, self._schema)


class SqliteEventLog:
    """A few aiosqlite connections, as several server workers would hold; WAL lets their
    reads run while another writes, so two of them can read the same max."""

    CONNECTIONS = 4

    _path: Path | None = None

    def __init__(self) -> None:
        self._free: list[aiosqlite.Connection] = []
        self._all: list[aiosqlite.Connection] = []
        self._slots = anyio.Semaphore(1)

    async def setup(self, url: str, schema: str, pool_size: int) -> None:
        self._path = lite.fresh_database(url, schema)
        n = max(1, min(pool_size, self.CONNECTIONS))
        for _ in range(n):
            conn = await aiosqlite.connect(self._path, isolation_level=None)
            for pragma in lite.PRAGMAS:
                await conn.execute(pragma)
            self._all.append(conn)
        self._free = list(self._all)
        self._slots = anyio.Semaphore(n)

    async def teardown(self) -> None:
        for conn in self._all:
            await conn.close()
        self._all, self._free = [], []
        if self._path is not None:
            remove_sqlite_files(self._path)

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        assert self._path is not None
        await anyio.to_thread.run_sync(lite.bulk_preload, self._path, turns, {})

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._slots:
            conn = self._free.pop()
            try:
                yield conn
            finally:
                self._free.append(conn)

    async def append(self, conversation_id: str, row: rows_.Row) -> None:
        async with self._connection() as conn:
            async with conn.execute(lite.NEXT_POSITION, (conversation_id,)) as cur:
                found = await cur.fetchone()
            assert found is not None
            try:
                await conn.execute(lite.INSERT, (conversation_id, found[0], *row))
            except sqlite3.IntegrityError as exc:
                raise PositionTaken from exc

    async def read_back(self) -> list[CheckRow]:
        assert self._path is not None
        return await read_ai_messages_sqlite(self._path)
