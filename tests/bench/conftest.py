"""Benchmark tests: PostgreSQL at $STORE_PG_URL (a missing server fails them, never skips),
SQLite in temporary files."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from benchmarks.dbtarget import parse_db_url

PG_URL = os.environ.get("STORE_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """The PostgreSQL URL. The test is recorded as run against PostgreSQL (see
    tests/conftest.py's on_postgres) unless it is the SQLite case of a test parametrized
    over ``backend``."""
    callspec = getattr(request.node, "callspec", None)
    sqlite_case = callspec is not None and callspec.params.get("backend") == "sqlite"
    if not sqlite_case and PG_URL == "skip":
        pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")
    if not sqlite_case and ("database", "postgres") not in request.node.user_properties:
        request.node.user_properties.append(("database", "postgres"))
    return PG_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bench.db'}"


@pytest.fixture
def bench_schemas() -> Callable[[str], Awaitable[list[str]]]:
    return _bench_schemas


async def _bench_schemas(run_id: str) -> list[str]:
    """Benchmark schemas of ``run_id`` still present (there should be none after a run)."""
    conn = await asyncpg.connect(parse_db_url(PG_URL).asyncpg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE $1",
            f"bench\\_%\\_{run_id}",
        )
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def schemas_named(prefix: str) -> list[str]:
    """Schemas called ``<prefix>_..._<this process id>_...`` still present: a tool's scratch
    schemas, made by this test process (there should be none once it returned). Another
    test run on the same server at the same moment has its own."""
    conn = await asyncpg.connect(parse_db_url(PG_URL).asyncpg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE $1",
            prefix.replace("_", "\\_") + "\\_%",
        )
    finally:
        await conn.close()
    return [r[0] for r in rows if f"_{os.getpid()}_" in r[0]]


@pytest.fixture
def leftover_schemas() -> Callable[[str], Awaitable[list[str]]]:
    return schemas_named
