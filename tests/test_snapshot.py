"""schema/<dialect>/schema.sql is what applying every migration in order gives: tables,
constraints, generated expressions, indexes, functions and triggers, compared as the
database itself prints them. After a new migration: python -m store.snapshot."""

from __future__ import annotations

import pytest

from store.snapshot import build, snapshot_path

from .conftest import PG_URL, on_postgres


async def test_the_sqlite_snapshot_is_the_migrations() -> None:
    assert await build("sqlite", None) == snapshot_path("sqlite").read_text(), (
        "schema/sqlite/schema.sql is stale: run `python -m store.snapshot --db sqlite`"
    )


async def test_the_postgres_snapshot_is_the_migrations(request: pytest.FixtureRequest) -> None:
    on_postgres(request)
    if PG_URL == "skip":
        pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")
    assert await build("postgres", PG_URL) == snapshot_path("postgres").read_text(), (
        "schema/postgres/schema.sql is stale: run `python -m store.snapshot --db URL`"
    )
