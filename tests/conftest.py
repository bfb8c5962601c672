"""Every database test runs on both backends: SQLite (a temporary file) and PostgreSQL
(``STORE_PG_URL``, default the local server), each test in a fresh schema or file. A test
module that sets ``BOTH_CLAIM_PATHS = True`` (the claim, lease, takeover and hand-over
suites) runs on PostgreSQL a second time with the Python claim rules that SQLite uses
(``postgres-pyclaim``: ``store.hooks.use_python_claims``), so that they and the PL/pgSQL
in ``turnstore_apply`` cannot drift apart unnoticed.

A PostgreSQL server that cannot be reached FAILS the PostgreSQL tests; it never skips
them. To run only the SQLite half on a machine without PostgreSQL, set STORE_PG_URL=skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from store import Store, StoreConfig, hooks

PG_URL = os.environ.get("STORE_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class Target:
    """Where one test's store lives: a URL plus, on PostgreSQL, its private schema."""

    kind: str
    url: str
    schema: str | None
    #: PostgreSQL: claims and hand-overs by the Python rules (``postgres-pyclaim``)
    python_claims: bool = False

    async def open(self, **kwargs: object) -> Store:
        config = kwargs.pop("config", None) or StoreConfig(lease_seconds=30, poll_max_seconds=0.05)
        store = await Store.open(self.url, schema=self.schema, config=config, **kwargs)  # type: ignore[arg-type]
        if self.python_claims:
            hooks.use_python_claims(store)
        return store

    async def raw_execute(self, *statements: str) -> None:
        """Run SQL as a plain client would (no turnstore code in the way)."""
        if self.kind == "postgres":
            conn = await asyncpg.connect(asyncpg_dsn(self.url))
            try:
                await conn.execute(f'SET search_path TO "{self.schema}"')
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()
        else:
            import sqlite3

            conn = sqlite3.connect(make_url(self.url).database, isolation_level=None)
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                for statement in statements:
                    conn.executescript(statement)
            finally:
                conn.close()


async def _drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(PG_URL))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _require_postgres() -> None:
    try:
        conn = await asyncpg.connect(asyncpg_dsn(PG_URL), timeout=5)
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is not reachable ({exc!r}). The PostgreSQL tests need a "
            "server; start it, point STORE_PG_URL at one, or set STORE_PG_URL=skip to run "
            "the SQLite tests alone.",
            pytrace=False,
        )
    await conn.close()


BACKENDS = ["sqlite", "postgres"]
PYCLAIM = "postgres-pyclaim"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The backends a test's ``target`` runs on (see the module's docstring)."""
    if "target" in metafunc.fixturenames:
        both = getattr(metafunc.module, "BOTH_CLAIM_PATHS", False)
        metafunc.parametrize("target", [*BACKENDS, *([PYCLAIM] if both else [])], indirect=True)


@asynccontextmanager
async def _postgres_target(python_claims: bool = False) -> AsyncIterator[Target]:
    """A fresh schema on the PostgreSQL server, dropped afterwards."""
    if PG_URL == "skip":
        pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")
    await _require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield Target("postgres", PG_URL, schema, python_claims)
    finally:
        await _drop_schema(schema)


def on_postgres(request: pytest.FixtureRequest) -> None:
    """Record in the test report (junit XML: property database=postgres) that this test
    ran against PostgreSQL: .ci/run counts them."""
    if ("database", "postgres") not in request.node.user_properties:
        request.node.user_properties.append(("database", "postgres"))


@pytest.fixture
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", None)
        return
    on_postgres(request)
    async with _postgres_target(python_claims=request.param == PYCLAIM) as pg:
        yield pg


@pytest.fixture
async def pg_target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """PostgreSQL only, for what only PostgreSQL has (pg_terminate_backend, ...)."""
    on_postgres(request)
    async with _postgres_target() as pg:
        yield pg


@pytest.fixture
async def store(target: Target) -> AsyncIterator[Store]:
    opened = await target.open()
    try:
        yield opened
    finally:
        await opened.close()


OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_store(target: Target) -> AsyncIterator[OpenStore]:
    """Open more stores on the same database (other 'processes' in one test)."""
    opened: list[Store] = []

    async def factory(**kwargs: object) -> Store:
        s = await target.open(**kwargs)
        opened.append(s)
        return s

    try:
        yield factory
    finally:
        for s in opened:
            await s.close()
