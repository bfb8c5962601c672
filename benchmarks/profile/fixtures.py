"""What the profiling probes share: a throwaway namespace (a PostgreSQL schema or a SQLite
file) holding a store, or a bare connection to its tables, dropped when the block ends;
and the turns they write (an HTML payload, a step of three tool calls)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from store import AssistantMessage, Store, ToolCall, ToolResult

from ..dbtarget import DbTarget, drop_pg_schema, parse_db_url, remove_sqlite_files

CALLS_PER_STEP = 3


def html(size: int = 360) -> str:
    """An HTML section of about ``size`` bytes (at least 55), as a site-building tool
    returns."""
    head, tail, words = "<section><h2>Menu</h2><p>", "</p></section>", "sourdough, rye, "
    return head + words * max(1, (size - len(head) - len(tail)) // len(words)) + tail


def step(
    prefix: str, text: str = "inserting", payload: str | None = None
) -> tuple[AssistantMessage, list[ToolResult]]:
    """A step of ``CALLS_PER_STEP`` ``insertHtml`` calls with ids ``<prefix>_<k>``, each
    with the payload as its argument and its result."""
    body = html() if payload is None else payload
    calls = [ToolCall(f"{prefix}_{k}", "insertHtml", {"html": body}) for k in range(CALLS_PER_STEP)]
    return AssistantMessage(text, calls), [ToolResult(c.id, body) for c in calls]


def postgres(url: str, probe: str) -> DbTarget:
    """``url``'s target, or the exit of a probe that measures PostgreSQL only."""
    target = parse_db_url(url)
    if target.backend != "postgres" or target.asyncpg_dsn is None:
        raise SystemExit(f"{probe} measures PostgreSQL")
    return target


@asynccontextmanager
async def scratch_namespace(url: str, prefix: str) -> AsyncIterator[tuple[DbTarget, str]]:
    """``(target, schema)``: a fresh ``<prefix>_<pid>_<random>`` name, dropped when the
    block ends with what it holds (a PostgreSQL schema, or the SQLite file beside the given
    one that ``DbTarget.sqlite_file`` names). The process id: a test finds its own
    leftovers, not another run's."""
    target = parse_db_url(url)
    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        yield target, schema
    finally:
        if target.backend == "postgres":
            assert target.asyncpg_dsn is not None
            await drop_pg_schema(target.asyncpg_dsn, schema)
        else:
            remove_sqlite_files(target.sqlite_file(schema))


async def open_store(target: DbTarget, schema: str, **options: Any) -> Store:
    """A store (``Store.open``'s ``options``) on ``schema``'s namespace, migrated."""
    pg = target.backend == "postgres"
    return await Store.open(target.sqlalchemy_url(schema), schema=schema if pg else None, **options)


@asynccontextmanager
async def scratch_store(url: str, prefix: str, **options: Any) -> AsyncIterator[tuple[Store, str]]:
    """``(store, schema)``: ``open_store`` in a ``scratch_namespace``, closed and dropped
    when the block ends."""
    async with scratch_namespace(url, prefix) as (target, schema):
        store = await open_store(target, schema, **options)
        try:
            yield store, schema
        finally:
            await store.close()


async def connect(url: str, schema: str) -> asyncpg.Connection:
    """A connection of its own whose search_path is ``schema``, with sequential scans off
    as on the store's own connections and ``synchronous_commit`` off: the probes measure
    CPU, not the WAL flush's wait."""
    dsn = parse_db_url(url).asyncpg_dsn
    assert dsn is not None, "PostgreSQL only"
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "enable_seqscan": "off"}
    )
    await conn.execute("SET synchronous_commit = off")
    return conn


@asynccontextmanager
async def scratch_connection(
    url: str, prefix: str
) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """``(connection, schema)``: ``connect`` to turnstore's tables at their current version in a
    ``scratch_namespace`` (migrated by a store, closed at once), dropped when the block
    ends (PostgreSQL)."""
    postgres(url, prefix)
    async with scratch_namespace(url, prefix) as (target, schema):
        await (await open_store(target, schema, pool_size=1)).close()
        conn = await connect(url, schema)
        try:
            yield conn, schema
        finally:
            await conn.close()
