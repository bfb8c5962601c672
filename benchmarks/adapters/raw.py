"""``raw`` on PostgreSQL: the ceiling. asyncpg straight from a pool, the same rows as the
naive design (``instatic_rows``), one transaction per step, no lock and no checks.

Speed: a step is one ``executemany`` of a prepared INSERT outside an explicit transaction
block. asyncpg sends every Bind/Execute and a single Sync, so PostgreSQL runs the step's rows
in one implicit transaction (all or nothing, asyncpg >= 0.22) in ONE round trip, where
``BEGIN; executemany; COMMIT`` takes three. Positions are not read: the next position of each
conversation is kept in this process's memory and reserved before the write (there is no
await between reading and advancing it, so concurrent turns on one conversation get disjoint
ranges). That is only valid because one process writes; a failed write leaves a gap.

The write runs shielded from cancellation (an interrupted step either committed whole or not
at all, and the connection stays usable); an interrupted step that had not reached its commit
is committed by ``interrupt_turn`` with an interrupted result for every unanswered call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import anyio
import asyncpg

from ..checker import CheckRow
from ..dbtarget import drop_pg_schema, parse_db_url
from ..readback import read_ai_messages_pg
from . import instatic_rows as rows_
from .base import Adapter, AdapterOptions, PartialStep, PreloadTurn, ToolCall, ToolResult
from .pg_ai_messages import INSERT, bulk_preload, open_pool


@dataclass(slots=True)
class PgTurn:
    conversation_id: str


class RawPgAdapter(Adapter[PgTurn]):
    name = "raw"
    reports_lock_wait = True  # it takes no lock: every wait is 0

    _pool: asyncpg.Pool | None = None
    _dsn: str = ""
    _schema: str = ""

    def __init__(self, options: AdapterOptions) -> None:
        super().__init__(options)
        self._next_pos: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------

    async def setup(self, url: str, schema: str) -> None:
        dsn = parse_db_url(url).asyncpg_dsn
        assert dsn is not None
        self._dsn, self._schema = dsn, schema
        self._pool = await open_pool(dsn, schema, self.options.pool_size)

    async def teardown(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._schema:
            await drop_pg_schema(self._dsn, self._schema)

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        assert self._pool is not None
        await bulk_preload(self._pool, self._schema, turns, self._next_pos)

    # --- turns ----------------------------------------------------------------------------

    async def begin_turn(
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> PgTurn:
        await self._write(conversation_id, [rows_.user_row(user_text)])
        return PgTurn(conversation_id)

    async def commit_step(
        self,
        turn: PgTurn,
        assistant_text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
    ) -> None:
        await self._write(turn.conversation_id, rows_.step_rows(assistant_text, calls, results))

    async def finish_turn(self, turn: PgTurn) -> None:
        return None

    async def interrupt_turn(self, turn: PgTurn, partial: PartialStep | None) -> None:
        if partial is not None:
            rows = rows_.step_rows(partial.assistant_text, partial.calls, partial.completed())
            await self._write(turn.conversation_id, rows)

    async def read_back(self) -> list[CheckRow]:
        return await read_ai_messages_pg(self._dsn, self._schema)

    # --- the write ------------------------------------------------------------------------

    async def _write(self, conversation_id: str, rows: list[rows_.Row]) -> None:
        assert self._pool is not None
        with anyio.CancelScope(shield=True):
            async with self._pool.acquire() as conn:
                await self._insert(conn, conversation_id, rows)

    async def _insert(
        self, conn: asyncpg.Connection, conversation_id: str, rows: list[rows_.Row]
    ) -> None:
        first = self._next_pos.get(conversation_id, 0)
        self._next_pos[conversation_id] = first + len(rows)
        await conn.executemany(INSERT, rows_.positioned(conversation_id, first, rows))
