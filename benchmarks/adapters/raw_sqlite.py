"""``raw`` and ``raw-locked`` on SQLite (WAL, ``synchronous=NORMAL``): stdlib sqlite3, one
connection, each write one hop to a worker thread (a capacity limiter of 1 serializes them:
SQLite has one writer anyway) running ``BEGIN; executemany; COMMIT``.

``raw`` keeps the next positions in memory (see ``raw.py``); ``raw-locked`` opens with
``BEGIN IMMEDIATE`` (the database write lock; its wait is reported) and reads
``max(position)``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from ..checker import CheckRow
from ..dbtarget import remove_sqlite_files
from ..readback import read_ai_messages_sqlite
from . import instatic_rows as rows_
from . import sqlite_ai_messages as db
from .base import Adapter, AdapterOptions, PartialStep, PreloadTurn, ToolCall, ToolResult
from .raw import PgTurn as Turn


class RawSqliteAdapter(Adapter[Turn]):
    name = "raw"
    reports_lock_wait = True  # it takes no lock: every wait is 0
    locked = False

    _conn: sqlite3.Connection | None = None
    _path: Path | None = None

    def __init__(self, options: AdapterOptions) -> None:
        super().__init__(options)
        self._next_pos: dict[str, int] = {}
        self._limiter = anyio.CapacityLimiter(1)

    async def setup(self, url: str, schema: str) -> None:
        self._path = db.fresh_database(url, schema)
        self._conn = db.connect(self._path)

    async def teardown(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._path is not None:
            remove_sqlite_files(self._path)

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        assert self._path is not None
        await anyio.to_thread.run_sync(db.bulk_preload, self._path, turns, self._next_pos)

    async def begin_turn(
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> Turn:
        await self._write(conversation_id, [rows_.user_row(user_text)])
        return Turn(conversation_id)

    async def commit_step(
        self,
        turn: Turn,
        assistant_text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
    ) -> None:
        await self._write(turn.conversation_id, rows_.step_rows(assistant_text, calls, results))

    async def finish_turn(self, turn: Turn) -> None:
        return None

    async def interrupt_turn(self, turn: Turn, partial: PartialStep | None) -> None:
        if partial is not None:
            rows = rows_.step_rows(partial.assistant_text, partial.calls, partial.completed())
            await self._write(turn.conversation_id, rows)

    async def read_back(self) -> list[CheckRow]:
        assert self._path is not None
        return await read_ai_messages_sqlite(self._path)

    async def _write(self, conversation_id: str, rows: list[rows_.Row]) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                self._write_sync, conversation_id, rows, limiter=self._limiter
            )

    def _write_sync(self, conversation_id: str, rows: list[rows_.Row]) -> None:
        conn = self._conn
        assert conn is not None
        if self.locked:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            self.record_lock_wait((time.perf_counter() - t0) * 1000.0)
            first = conn.execute(db.NEXT_POSITION, (conversation_id,)).fetchone()[0]
        else:
            conn.execute("BEGIN")
            first = self._next_pos.get(conversation_id, 0)
            self._next_pos[conversation_id] = first + len(rows)
        try:
            conn.executemany(db.INSERT, rows_.positioned(conversation_id, first, rows))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class RawLockedSqliteAdapter(RawSqliteAdapter):
    name = "raw-locked"
    locked = True
