"""``raw-locked`` on PostgreSQL: ``raw`` plus what serializing writers costs at the least:
each write transaction takes ``pg_advisory_xact_lock(key(conversation))`` and reads
``max(position)`` before inserting (``BEGIN; lock; max; executemany; COMMIT``). The lock wait
reported is the lock statement's round trip (so it includes one network round trip)."""

from __future__ import annotations

import time

import asyncpg

from . import instatic_rows as rows_
from .lockkey import lock_key
from .pg_ai_messages import INSERT, NEXT_POSITION
from .raw import RawPgAdapter

LOCK = "SELECT pg_advisory_xact_lock($1)"


class RawLockedPgAdapter(RawPgAdapter):
    name = "raw-locked"
    reports_lock_wait = True

    async def _insert(
        self, conn: asyncpg.Connection, conversation_id: str, rows: list[rows_.Row]
    ) -> None:
        async with conn.transaction():
            t0 = time.perf_counter()
            await conn.execute(LOCK, lock_key(conversation_id))
            self.record_lock_wait((time.perf_counter() - t0) * 1000.0)
            first = await conn.fetchval(NEXT_POSITION, conversation_id)
            await conn.executemany(INSERT, rows_.positioned(conversation_id, first, rows))
