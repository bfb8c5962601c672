"""The facade: open a store, migrate it, begin turns, read and replay history."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy.engine import URL, make_url

from . import claim, telemetry
from .backends.base import MIGRATION_ATTEMPTS, MIGRATION_LOCK_TIMEOUT, Backend
from .config import StoreConfig
from .core import Core
from .erase import Erased, erase
from .errors import StoreUnavailable, TurnNotFound
from .history import as_datetime, read_history, read_replay_rows
from .messages import Content, StoredMessage
from .outcome import TurnOutcome
from .replay.fast import replay_rows
from .replay.pairing import Unanswered
from .replay.repair import Repair
from .schema_window import check_window
from .turn import Turn, wait_for_turn

if TYPE_CHECKING:
    from .usage import UsageRecord, UsageTotals

DEFAULT_URL = "sqlite+aiosqlite:///./conversations.db"


@dataclass(frozen=True, slots=True)
class TurnInfo:
    id: str
    conversation_id: str
    idempotency_key: str | None
    status: str
    steps: int
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


class Store:
    """A conversation store on PostgreSQL (``postgresql+asyncpg://...``) or SQLite
    (``sqlite+aiosqlite:///path``). Open it with ``await Store.open(url)`` or
    ``async with Store.open(url) as store``."""

    def __init__(self, backend: Backend, config: StoreConfig) -> None:
        self._backend = backend
        self.config = config
        backend.retry_seconds = config.retry_seconds
        self.limits = config.limits
        #: what beginning and running turns need, handed to ``claim`` and ``turn``
        self._core = Core(
            backend,
            config,
            owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            hand_over=partial(claim.hand_over, config),
        )

    @staticmethod
    def open(
        url: str | URL = DEFAULT_URL,
        *,
        migrate: bool = True,
        schema: str | None = None,
        pool_size: int = 10,
        config: StoreConfig | None = None,
        sqlite_busy_timeout: float = 30.0,
        sqlite_synchronous: str = "FULL",
    ) -> _Opening:
        """Open a store. ``migrate`` applies missing migrations first (safe when several
        processes start at once): on SQLite all of them, on PostgreSQL those this code
        needs (never a contract migration, which removes what older code may still use:
        ``python -m store migrate`` applies those, once per deploy). Either way the
        database's schema must be in this code's compatibility window
        (``store.schema_window``), else ``SchemaTooOld`` or ``SchemaTooNew``. In
        production on PostgreSQL, migrate with ``python -m store migrate --db URL`` once per
        deploy and open with ``migrate=False`` (docs/operations.md, Migrations and deploys).
        ``schema`` (PostgreSQL) keeps the tables in that schema. ``sqlite_synchronous`` is
        FULL by default: a committed step survives power loss."""
        return _Opening(
            url,
            migrate=migrate,
            schema=schema,
            pool_size=pool_size,
            config=config or StoreConfig(),
            sqlite_busy_timeout=sqlite_busy_timeout,
            sqlite_synchronous=sqlite_synchronous,
        )

    async def migrate(
        self,
        *,
        lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
        attempts: int = MIGRATION_ATTEMPTS,
    ) -> list[int]:
        """Apply every missing migration in order, contract ones included (what
        ``python -m store migrate`` does); return the versions applied. On PostgreSQL a
        statement waits at most ``lock_timeout`` seconds for a table's lock, and a migration
        that timed out is tried again, ``attempts`` times in all (``MigrationBlocked``)."""
        return await self._backend.migrate(lock_timeout=lock_timeout, attempts=attempts)

    async def close(self) -> None:
        await self._backend.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- turns --------------------------------------------------------------------------

    async def begin_turn(
        self,
        conversation_id: str,
        user_message: Content,
        *,
        idempotency_key: str | None = None,
        on_busy: claim.OnBusy = "wait",
        timeout: float | None = None,
    ) -> Turn:
        """Claim the conversation and write the user message, in one transaction.

        If another turn holds the conversation, wait in a fair queue for up to ``timeout``
        seconds (default ``StoreConfig.busy_timeout``), or with ``on_busy="fail"`` raise
        ``ConversationBusy`` at once. A repeated ``idempotency_key`` (or, without a key, the
        same message within the duplicate window) returns a handle on the first submit's
        turn with ``duplicate=True``: nothing new is written.
        """
        return await claim.begin_turn(
            self._core,
            conversation_id,
            user_message,
            idempotency_key=idempotency_key,
            on_busy=on_busy,
            timeout=timeout,
        )

    @asynccontextmanager
    async def turn(
        self,
        conversation_id: str,
        user_message: Content,
        *,
        idempotency_key: str | None = None,
        on_busy: claim.OnBusy = "wait",
        timeout: float | None = None,
    ) -> AsyncIterator[Turn]:
        """``async with store.turn(...) as turn``: begin a turn, keep its lease alive while
        the block runs, and end it when the block ends: finished if the block returns
        (unless it ended the turn itself), interrupted if cancelled, failed if it raises."""
        handle = await self.begin_turn(
            conversation_id,
            user_message,
            idempotency_key=idempotency_key,
            on_busy=on_busy,
            timeout=timeout,
        )
        if handle.duplicate:
            yield handle
            return
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as keepalive:
                keepalive.start_soon(handle.keep_alive)
                try:
                    yield handle
                except Exception as exc:  # re-raised below, outside the task group
                    error = exc
                finally:
                    keepalive.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await handle.end_quietly("interrupted", "cancelled")
            raise
        with anyio.CancelScope(shield=True):
            if error is not None:
                await handle.end_quietly("failed", f"{type(error).__name__}: {error}")
            elif handle.status == "running":
                await handle.finish()
        if error is not None:
            raise error

    async def turn_status(self, turn_id: str) -> TurnInfo:
        async def read() -> Any:
            async with self._backend.read() as tx:
                return await tx.one("turn_info", turn_id=turn_id)

        row = await self._backend.retrying(read, write=False)
        if row is None:
            raise TurnNotFound(f"no turn {turn_id!r}")
        return TurnInfo(
            id=row.id,
            conversation_id=row.conversation_id,
            idempotency_key=row.idempotency_key,
            status=row.status,
            steps=row.steps,
            error=row.error,
            created_at=as_datetime(row.created_at),
            started_at=as_datetime(row.started_at),
            ended_at=as_datetime(row.ended_at),
        )

    async def wait_for_turn(self, turn_id: str) -> TurnOutcome:
        """Wait until a turn has ended; return its outcome (see ``Turn.wait``): at once when
        it ends in this process, within a poll (0.5 s at most) when elsewhere."""
        return await wait_for_turn(self._core, turn_id)

    async def history(
        self, conversation_id: str, *, last: int | None = None
    ) -> list[StoredMessage]:
        """Committed messages in position order. ``last=N``: the last N messages, and the
        ones before them back to the user message that opens the turn the window would
        cut, so that a window always starts on a user message and replays as a whole
        conversation. ``last=0``: none."""

        return await self._backend.retrying(
            lambda: read_history(self._backend, conversation_id, last), write=False
        )

    async def replay(
        self,
        conversation_id: str,
        provider: str,
        *,
        last: int | None = None,
        unanswered: Unanswered = "synthesize",
        system: str | None = None,
    ) -> tuple[dict[str, Any], list[Repair]]:
        """The conversation as request body fields for ``provider`` (a key of
        ``store.replay.PROVIDERS``), and the repairs made: exactly what
        ``build_request(from_stored_messages(await store.history(conversation_id,
        last=last)), provider, unanswered=unanswered, system=system)`` returns, in a
        fraction of the time (history this store wrote is formatted straight from its rows).
        ``system``: the system prompt (instructions), put where the provider takes it
        (a system message for OpenAI, ``system`` for Anthropic, ``systemInstruction`` for
        Gemini)."""
        with telemetry.span("replay", conversation_id) as span:
            rows = await self._backend.retrying(
                lambda: read_replay_rows(self._backend, conversation_id, last), write=False
            )
            body, repairs = replay_rows(rows, provider, unanswered=unanswered, system=system)
            if span.is_recording():
                span.set_attribute("turnstore.outcome", f"{len(repairs)} repairs")
                span.set_attribute("turnstore.provider", provider)
        return body, repairs

    async def resume_turn(self, turn_id: str, *, epoch: int | None = None) -> Turn:
        """A handle on a running turn that another store (another process, or this service
        before a restart) began: see ``store.resume.resume_turn``. ``epoch``, the turn's
        fencing token (``Turn.epoch``), is checked when given."""
        from .resume import resume_turn

        return await resume_turn(self, turn_id, epoch=epoch)

    async def record_usage(
        self,
        turn: Turn | str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        cost_usd: Decimal | float | int | str | None = None,
        step: int | None = None,
        model: str | None = None,
        usage_id: str | None = None,
        epoch: int | None = None,
    ) -> UsageRecord:
        """Record what a model call of ``turn`` (its handle, or its id) cost: tokens and
        the cost in US dollars (kept exactly, to a billionth), for one ``step`` (at most the
        turn's open step, ``turn.steps + 1``) or, with ``step=None``, for the turn as a
        whole. Append-only: each call adds a report; sums are read with
        ``conversation_usage`` and ``turn_usage``. ``usage_id`` makes a retry exact: the
        same report again returns the first (``duplicate=True``). Accepted for a turn
        that runs or has ended (taken over included), refused for one that never ran.
        ``epoch`` (default: the handle's) must be the turn's fencing token."""
        from .usage import record_usage

        return await record_usage(
            self._backend,
            self.limits,
            turn,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_creation_tokens=cache_creation_tokens,
            cost_usd=cost_usd,
            step=step,
            model=model,
            usage_id=usage_id,
            epoch=epoch,
        )

    async def turn_usage(self, turn_id: str) -> list[UsageRecord]:
        """Every usage report of a turn, in the order recorded (``store.usage.sum_records``
        sums them)."""
        from .usage import usage_of_turn

        return await usage_of_turn(self, turn_id)

    async def conversation_usage(
        self, conversation_id: str, *, from_position: int = 0
    ) -> tuple[UsageTotals, dict[str, UsageTotals]]:
        """A conversation's usage summed over all its turns, and per turn for the turns whose
        user message is at ``from_position`` or later (a history window's), by turn id."""
        from .usage import conversation_usage

        return await conversation_usage(self, conversation_id, from_position=from_position)

    async def delete_conversation(self, conversation_id: str, *, force: bool = False) -> Erased:
        """Erase every row of a conversation — messages, turns, staged steps, session marks —
        in one transaction: the one path by which rows leave the store (privacy requests,
        retention). Refused with ``ConversationInUse`` while a turn runs or waits there,
        unless ``force``. Returns what was deleted (nothing, for an unknown conversation).
        A session's ``clear_session()`` is not this: it hides items and deletes nothing."""
        return await erase(self, conversation_id, force=force)


class _Opening:
    """``Store.open(...)``: awaitable, and an async context manager that closes the store."""

    def __init__(self, url: str | URL, **options: Any) -> None:
        self._url = url
        self._options = options
        self._store: Store | None = None

    def __await__(self) -> Generator[Any, None, Store]:
        return self._open().__await__()

    def __getattr__(self, name: str) -> Any:
        # Reached only for names _Opening lacks: the caller forgot to await Store.open.
        if name.startswith("__"):
            raise AttributeError(name)
        raise TypeError(
            f"Store.open(...) was not awaited, so it has no {name!r}: write "
            "`store = await Store.open(url)` or `async with Store.open(url) as store:`"
        )

    async def __aenter__(self) -> Store:
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()

    async def _open(self) -> Store:
        options = self._options
        backend = make_backend(
            self._url,
            schema=options["schema"],
            pool_size=options["pool_size"],
            sqlite_busy_timeout=options["sqlite_busy_timeout"],
            sqlite_synchronous=options["sqlite_synchronous"],
        )
        store = Store(backend, options["config"])
        try:
            if options["migrate"]:
                await migrate_for_open(backend)
            await check_schema(backend)
        except Exception as exc:
            await backend.close()
            if backend.failure(exc) is not None:
                where = make_url(self._url).render_as_string(hide_password=True)
                raise StoreUnavailable(
                    f"cannot reach the database at {where} ({exc}); is the server running "
                    "and the URL right?"
                ) from exc
            raise
        except BaseException:
            await backend.close()
            raise
        return store


def make_backend(
    url: str | URL,
    *,
    schema: str | None = None,
    pool_size: int = 10,
    sqlite_busy_timeout: float = 30.0,
    sqlite_synchronous: str = "FULL",
) -> Backend:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+asyncpg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")  # what users paste, async
    if parsed.get_backend_name() == "postgresql":
        from .backends import postgres

        return postgres.make_backend(parsed, schema, pool_size)
    if parsed.get_backend_name() == "sqlite":
        from .backends import sqlite

        if schema is not None:
            raise ValueError("schema= is for PostgreSQL; SQLite keeps one schema per file")
        if parsed.drivername == "sqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
            raise ValueError(
                "an in-memory SQLite database cannot be shared by the store's writer and "
                "readers: give a file (for tests, one in a temporary directory)"
            )
        if sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        engine = sqlite.create_engine(
            parsed, sqlite_busy_timeout, sqlite_synchronous.upper(), pool_size
        )
        return sqlite.SqliteBackend(
            engine,
            namespace=parsed.database or "",
            busy_timeout=sqlite_busy_timeout,
            synchronous=sqlite_synchronous.upper(),
        )
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: use "
        "postgresql+asyncpg://... or sqlite+aiosqlite:///path"
    )


async def migrate_for_open(backend: Backend) -> None:
    """``Store.open(migrate=True)``: read the schema's state (no lock), and migrate only if
    something is missing: on SQLite every migration, on PostgreSQL up to the version this
    code needs (``sql.needed_version``: trailing contract migrations are left to
    ``python -m store migrate``). Checksums recorded as missing are filled in."""
    from . import sql

    state = await backend.schema_state()
    known = {m.version for m in sql.migrations(backend.dialect)}
    unadopted = any(state.checksums.get(v) is None for v in state.versions if v in known)
    upto = sql.code_version(backend.dialect)
    if backend.dialect == "postgres":
        upto = sql.needed_version(backend.dialect)
    if state.version < upto or unadopted:
        await backend.migrate(upto=upto)


async def check_schema(backend: Backend) -> None:
    """Raise ``SchemaError`` (``SchemaTooOld``, ``SchemaTooNew``) unless this code runs
    against the database's schema (``store.schema_window``)."""
    check_window(backend.dialect, await backend.schema_state())
