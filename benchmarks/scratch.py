"""A throwaway PostgreSQL schema holding turnstore's tables at their current version, for
the profiling tools (``db_cost``, ``statement_cost``): a connection to it, and the schema
dropped when the block ends."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from store import Store

from .dbtarget import drop_pg_schema, parse_db_url


@asynccontextmanager
async def scratch_schema(url: str, prefix: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """``(connection, schema)``: a fresh ``<prefix>_<pid>_<random>`` schema migrated by the
    store (the process id: a test finds its own leftovers, not another run's),
    and a connection whose search_path is it, with sequential scans off as on the store's
    own connections. ``synchronous_commit`` is off for the session: these tools measure
    CPU, not the WAL flush's wait."""
    target = parse_db_url(url)
    if target.backend != "postgres" or target.asyncpg_dsn is None:
        raise SystemExit(f"{prefix} measures PostgreSQL")
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    store = await Store.open(target.sqlalchemy_url(schema), schema=schema, pool_size=1)
    await store.close()
    try:
        conn = await asyncpg.connect(
            target.asyncpg_dsn, server_settings={"search_path": schema, "enable_seqscan": "off"}
        )
        try:
            await conn.execute("SET synchronous_commit = off")
            yield conn, schema
        finally:
            await conn.close()
    finally:
        await drop_pg_schema(target.asyncpg_dsn, schema)
