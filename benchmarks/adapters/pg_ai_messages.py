"""The ``ai_messages`` table on PostgreSQL, shared by raw, raw-locked and naive: a pool bound
to the system's schema, its statements, and a bulk loader for ``--preload``."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from ..dbtarget import create_pg_schema
from . import instatic_rows as rows_
from .base import PreloadTurn

INSERT = (
    f"INSERT INTO ai_messages ({', '.join(rows_.COLUMNS)}) VALUES ($1, $2, $3, $4::jsonb, $5, $6)"
)
NEXT_POSITION = "SELECT coalesce(max(position), -1) + 1 FROM ai_messages WHERE conversation_id = $1"


async def open_pool(dsn: str, schema: str, size: int) -> asyncpg.Pool:
    """A fresh schema with an empty ``ai_messages`` table, and a pool whose connections use
    it (``search_path``).

    The pool does not reset a connection when it is released (asyncpg's default costs one
    more round trip per write: ``SELECT pg_advisory_unlock_all(); CLOSE ALL; ...``): these
    baselines keep no session state (their advisory locks are transaction-scoped)."""
    await create_pg_schema(dsn, schema)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=size,
        max_size=size,
        server_settings={"search_path": schema},
        reset=_keep_session,
    )
    async with pool.acquire() as conn:
        await conn.execute(rows_.PG_DDL)
    return pool


async def bulk_preload(
    pool: asyncpg.Pool, schema: str, turns: Iterable[PreloadTurn], next_pos: dict[str, int]
) -> None:
    """COPY finished history in, streamed; ``next_pos`` is advanced past it."""
    records = rows_.preload_records(turns, next_pos)
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "ai_messages", records=records, columns=rows_.COLUMNS, schema_name=schema
        )
        await conn.execute("ANALYZE ai_messages")


async def _keep_session(conn: asyncpg.Connection) -> None:
    return None
