"""A pytest plugin that runs the OpenAI Agents SDK's own session tests against
``TurnstoreSession``, with only the session class swapped: ``SQLiteSession`` and
``SQLAlchemySession``, as the test files import them, become thin subclasses of
``TurnstoreSession`` that take the same constructor arguments and map where the SDK's
session would keep its data (a file, an engine's URL, an in-memory database) to a turnstore
database: the same SQLite file, or on PostgreSQL a schema per such place.

Loaded by ``tests/agents_sdk/run.py`` (``-p turnstore_sdk_swap``) in a pytest run inside the
SDK's sdist. Environment: ``TURNSTORE_SDK_BACKEND`` (``sqlite`` or ``postgres``),
``TURNSTORE_SDK_PG_URL`` (the server, for ``postgres``).

Tests that inspect the SDK backend's own internals (its SQLite file and connections, its
tables, its engine object and session factory, its class-level registries) cannot run
against another backend: ``EXCLUDED`` names each, with the reason; they are deselected.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from store.integrations.openai_agents import TurnstoreSession

BACKEND = os.environ.get("TURNSTORE_SDK_BACKEND", "sqlite")
REPORT = os.environ.get("TURNSTORE_SDK_REPORT")  # where to write the outcomes, as JSON
PG_URL = os.environ.get("TURNSTORE_SDK_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
_RUN = uuid.uuid4().hex[:8]
_TMP = tempfile.TemporaryDirectory(prefix="turnstore-sdk-")
_SCHEMAS: dict[str, str] = {}

_CONNECTIONS = "inspects SQLiteSession's per-thread sqlite3 connections"
_CORRUPT = "writes a corrupt row into the SDK backend's messages table"
_TABLES = "drops or probes the SDK backend's own tables in its SQLite file"
_FACTORY = "replaces SQLAlchemySession's session factory or table set-up with fakes"
_ENGINE = "inspects SQLAlchemySession's engine object"
_REGISTRY = "inspects SQLAlchemySession's class-level registries"
_LOCKS = "inspects the SDK backend's process-local locks"

#: per test file, the tests (parameters left out) that cannot run on another backend, and why
EXCLUDED: dict[str, dict[str, str]] = {
    "test_session.py": {
        "test_sqlite_session_close_closes_worker_thread_connections": _CONNECTIONS,
        "test_sqlite_session_reaps_connections_from_exited_worker_threads": _CONNECTIONS,
        "test_sqlite_session_closes_retired_connections_before_the_next_allocation": _CONNECTIONS,
        "test_sqlite_session_keeps_connections_of_live_worker_threads": _CONNECTIONS,
        "test_sqlite_session_rollback_failure_evicts_connection": _CONNECTIONS,
        "test_sqlite_session_close_retries_quarantined_connection": _CONNECTIONS,
        "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome": _CONNECTIONS
        + " (a connection that pauses in commit)",
        "test_sqlite_session_pop_item_skips_corrupt_most_recent": _CORRUPT,
        "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": _CORRUPT,
        "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": _CORRUPT,
        "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": _CORRUPT,
        "test_sqlite_session_file_lock_is_shared_across_instances": _LOCKS,
        "test_sqlite_session_failed_add_items_releases_write_lock": _TABLES,
        "test_sqlite_session_failed_clear_session_rolls_back": _TABLES,
        "test_sqlite_session_failed_pop_item_releases_write_lock": _TABLES,
    },
    "test_sqlalchemy_session.py": {
        "test_sqlalchemy_session_defaults_to_escaped_non_ascii_storage": _FACTORY
        + " (reads its stored JSON text)",
        "test_sqlalchemy_session_can_store_non_ascii_without_escaping": _FACTORY
        + " (reads its stored JSON text)",
        "test_sqlite_fallback_reserves_writer_before_tail_claim": _ENGINE
        + " (its dialect, and the SQL it sends)",
        "test_pop_item_supports_unknown_delete_rowcount": _FACTORY,
        "test_pop_item_retries_returning_claim_lost_to_concurrent_delete": _FACTORY,
        "test_mutation_cancellation_waits_for_transaction_exit": _FACTORY,
        "test_pop_item_skips_corrupt_most_recent": _CORRUPT,
        "test_get_items_limit_skips_corrupt_newest_rows": _CORRUPT,
        "test_pop_item_returns_none_after_dropping_only_corrupt_rows": _CORRUPT,
        "test_add_items_waits_for_transient_sqlite_write_lock": _ENGINE
        + " (takes SQLite's write lock through it)",
        "test_add_items_cancelled_waiter_does_not_strand_table_init_lock": _LOCKS,
        "test_create_tables_false_does_not_allocate_shared_init_lock": _LOCKS,
        "test_get_items_same_timestamp_consistent_order": _FACTORY
        + " (and rewrites its rows' timestamps)",
        "test_pop_item_same_timestamp_returns_latest": _TABLES + " (rewrites its rows' timestamps)",
        "test_get_items_orders_by_id_for_ties": _FACTORY + " (records its ORDER BY)",
        "test_engine_property_from_url": _ENGINE,
        "test_engine_property_from_external_engine": _ENGINE,
        "test_engine_property_is_read_only": _ENGINE,
        "test_sqlite_configuration_registry_releases_collected_engines": _REGISTRY,
        "test_sqlite_configuration_registry_does_not_grow_unbounded": _REGISTRY,
    },
}


def _where(place: str | None) -> dict[str, Any]:
    """The turnstore database for one place the SDK's session would use: ``None`` is an
    in-memory database of its own; a path is a file shared by every session given it."""
    key = place if place is not None else f":memory:{uuid.uuid4().hex}"
    if BACKEND == "postgres":
        schema = _SCHEMAS.setdefault(key, f"sdk_{_RUN}_{len(_SCHEMAS)}")
        return {"url": PG_URL, "schema": schema}
    if place is None:
        return {"url": f"sqlite+aiosqlite:///{Path(_TMP.name) / (uuid.uuid4().hex + '.db')}"}
    return {"url": f"sqlite+aiosqlite:///{Path(place).resolve()}"}


def _place_of_path(db_path: str | Path) -> str | None:
    text = str(db_path)
    return None if text == ":memory:" or not text else str(Path(text).resolve())


def _place_of_url(url: Any) -> str | None:
    database = make_url(url).database or ""
    return None if database in ("", ":memory:") else str(Path(database).resolve())


class SQLiteSession(TurnstoreSession):
    """``SQLiteSession(session_id, db_path=":memory:", session_settings=None)``."""

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        session_settings: Any = None,
    ) -> None:
        super().__init__(
            session_id, session_settings=session_settings, **_where(_place_of_path(db_path))
        )


class _Engine:
    """What cleanup code does with a ``SQLAlchemySession``'s engine: ``dispose()`` it."""

    def __init__(self, session: TurnstoreSession) -> None:
        self._session = session

    async def dispose(self) -> None:
        await self._session.aclose()


class SQLAlchemySession(TurnstoreSession):
    """``SQLAlchemySession(session_id, engine=..., create_tables=False, ...)`` and
    ``SQLAlchemySession.from_url(session_id, url=..., ...)``."""

    def __init__(
        self,
        session_id: str,
        *,
        engine: Any,
        create_tables: bool = False,
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
        ensure_ascii: bool = True,
    ) -> None:
        super().__init__(
            session_id, session_settings=session_settings, **_where(_place_of_url(engine.url))
        )
        self._engine = _Engine(self)

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        session_settings: Any = None,
        **kwargs: Any,
    ) -> SQLAlchemySession:
        self = TurnstoreSession.__new__(cls)
        TurnstoreSession.__init__(
            self, session_id, session_settings=session_settings, **_where(_place_of_url(url))
        )
        self._engine = _Engine(self)
        return self

    @property
    def engine(self) -> _Engine:
        return self._engine


def pytest_configure(config: pytest.Config) -> None:
    import agents
    import agents.extensions.memory.sqlalchemy_session as sqlalchemy_session
    import agents.memory

    agents.SQLiteSession = SQLiteSession  # type: ignore[attr-defined,misc]
    agents.memory.SQLiteSession = SQLiteSession  # type: ignore[attr-defined]
    sqlalchemy_session.SQLAlchemySession = SQLAlchemySession  # type: ignore[misc]


def excluded(item: pytest.Item) -> str | None:
    """Why a collected test is excluded, or None."""
    return EXCLUDED.get(Path(str(item.fspath)).name, {}).get(item.name.split("[")[0])


_OUTCOMES: dict[str, Any] = {"passed": [], "failed": [], "skipped": [], "excluded": {}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        why = excluded(item)
        if why:
            dropped.append(item)
            _OUTCOMES["excluded"][item.nodeid] = why
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test passed if its call passed; it failed if any of its phases failed."""
    if report.failed:
        outcome = "failed"
    elif report.skipped:
        outcome = "skipped"
    elif report.when == "call":
        outcome = "passed"
    else:
        return
    if report.nodeid not in _OUTCOMES[outcome]:
        _OUTCOMES[outcome].append(report.nodeid)


def pytest_unconfigure(config: pytest.Config) -> None:
    if REPORT:
        Path(REPORT).write_text(json.dumps(_OUTCOMES, indent=1))
    if BACKEND == "postgres" and _SCHEMAS:
        asyncio.run(_drop_schemas())
    _TMP.cleanup()


async def _drop_schemas() -> None:
    import asyncpg

    dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        for schema in _SCHEMAS.values():
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
