"""Every database test runs on both backends: SQLite (a temporary file) and PostgreSQL
(``STORE_PG_URL``, default the local server), each test in a fresh schema or file. A test
module that sets ``BOTH_CLAIM_PATHS = True`` (the claim, lease, takeover and hand-over
suites) runs on PostgreSQL a second time with the Python claim rules that SQLite uses
(``postgres-pyclaim``: ``store.hooks.use_python_claims``), so that they and the PL/pgSQL
in ``turnstore_apply`` cannot drift apart unnoticed.

A PostgreSQL server that cannot be reached FAILS the PostgreSQL tests; it never skips
them. To run only the SQLite half on a machine without PostgreSQL, set STORE_PG_URL=skip.

The core tests (marked ``citus``) also run on a Citus cluster, PostgreSQL sharded by
conversation (docs/scaling.md), when ``STORE_CITUS_URL`` names its coordinator: each test
in a fresh schema that the store distributes as it migrates. A coordinator that cannot be
reached FAILS them. Unset (or ``skip``), the Citus variants are not collected at all: a
clone needs no cluster. CI (.ci/run) starts a local 3-node cluster (.ci/citus/) and sets
it, and refuses a run in which no Citus test ran.

The ``store`` and ``open_store`` fixtures (and every store on Citus) open a database with
every migration applied, as ``python -m store migrate`` leaves it at the end of a deploy;
a test that calls ``target.open()`` itself on PostgreSQL gets what ``Store.open(migrate=
True)`` applies: every migration but trailing contract ones (the schema during a deploy,
which this code serves as well: docs/operations.md).
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
from store.store import make_backend

PG_URL = os.environ.get("STORE_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
CITUS_URL = os.environ.get("STORE_CITUS_URL") or "skip"


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

    @property
    def dialect(self) -> str:
        """The SQL dialect: Citus is PostgreSQL."""
        return "sqlite" if self.kind == "sqlite" else "postgres"

    async def migrate(self) -> list[int]:
        """Every migration, contract ones too, as a deploy's ``python -m store migrate``
        applies them (``Store.open(migrate=True)`` on PostgreSQL stops before a contract
        migration); on a Citus coordinator this distributes the tables."""
        backend = make_backend(self.url, schema=self.schema)
        try:
            return await backend.migrate()
        finally:
            await backend.close()

    async def open(self, **kwargs: object) -> Store:
        config = kwargs.pop("config", None) or StoreConfig(lease_seconds=30, poll_max_seconds=0.05)
        if self.kind == "citus" and kwargs.get("migrate", True) is not False:
            await self.migrate()  # distributed only once every migration is applied
        store = await Store.open(self.url, schema=self.schema, config=config, **kwargs)  # type: ignore[arg-type]
        if self.python_claims:
            hooks.use_python_claims(store)
        return store

    async def raw_execute(self, *statements: str) -> None:
        """Run SQL as a plain client would (no turnstore code in the way)."""
        if self.dialect == "postgres":
            conn = await asyncpg.connect(asyncpg_dsn(self.url))
            # Citus relays a worker's refusal at COMMIT as a WARNING (then XX000): the
            # warning is the database's answer, put in the error as a client would log it
            warnings: list[str] = []
            conn.add_log_listener(lambda _c, m: warnings.append(f"{m.sqlstate}: {m.message}"))
            try:
                await conn.execute(f'SET search_path TO "{self.schema}"')
                for statement in statements:
                    await conn.execute(statement)
            except asyncpg.PostgresError as exc:
                if warnings:
                    raise type(exc)(f"{exc} (warnings: {'; '.join(warnings)})") from exc
                raise
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


async def _drop_schema(schema: str, url: str = PG_URL) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
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
#: the Citus backend, for a test marked ``citus`` (when STORE_CITUS_URL is set)
CITUS = ["citus"] if CITUS_URL != "skip" else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The backends a test's ``target`` runs on (see the module's docstring): a test marked
    ``citus`` on the Citus cluster too (when STORE_CITUS_URL is set)."""
    if "target" in metafunc.fixturenames:
        both = getattr(metafunc.module, "BOTH_CLAIM_PATHS", False)
        citus = metafunc.definition.get_closest_marker("citus") is not None
        metafunc.parametrize(
            "target",
            [*BACKENDS, *([PYCLAIM] if both else []), *(CITUS if citus else [])],
            indirect=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without STORE_CITUS_URL the Citus-only tests are not collected (deselected, never
    skipped): a clone needs no cluster."""
    if CITUS_URL != "skip":
        return
    kept = [item for item in items if item.get_closest_marker("citus_only") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


async def _require_citus() -> None:
    try:
        conn = await asyncpg.connect(asyncpg_dsn(CITUS_URL), timeout=5)
    except Exception as exc:
        pytest.fail(
            f"the Citus coordinator at {CITUS_URL} is not reachable ({exc!r}). Start the "
            "local cluster (.ci/citus/cluster-up.sh) or unset STORE_CITUS_URL.",
            pytrace=False,
        )
    try:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"
        ):
            pytest.fail(
                f"{CITUS_URL} has no citus extension: not a Citus coordinator", pytrace=False
            )
    finally:
        await conn.close()


@asynccontextmanager
async def _citus_target() -> AsyncIterator[Target]:
    """A fresh schema on the Citus coordinator (distributed by the store as it migrates),
    dropped afterwards."""
    await _require_citus()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield Target("citus", CITUS_URL, schema)
    finally:
        await _drop_schema(schema, CITUS_URL)


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


def on_postgres(request: pytest.FixtureRequest, database: str = "postgres") -> None:
    """Record in the test report (junit XML: property database=postgres, or citus) that
    this test ran against PostgreSQL (or Citus): .ci/run counts them."""
    if ("database", database) not in request.node.user_properties:
        request.node.user_properties.append(("database", database))


@pytest.fixture
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", None)
        return
    if request.param == "citus":
        on_postgres(request, "citus")
        async with _citus_target() as citus:
            yield citus
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
    """A store on a database migrated as a deploy leaves it (every migration)."""
    await target.migrate()
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
    await target.migrate()  # as a deploy leaves it, as the store fixture

    async def factory(**kwargs: object) -> Store:
        s = await target.open(**kwargs)
        opened.append(s)
        return s

    try:
        yield factory
    finally:
        for s in opened:
            await s.close()
