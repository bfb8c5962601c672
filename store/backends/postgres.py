"""PostgreSQL through asyncpg: transaction-level advisory locks serialise a conversation's
writes. The three hot writes — begin a turn, commit a step, end a turn — go through group
commit (``store.group_commit``): the writes that this process's turns make at the same
moment are sent as one call to ``turnstore_apply`` (schema/postgres/0003_group_commit.sql),
one round trip and one transaction, on asyncpg's own pool. Everything else (reads,
migrations, the general claim path) goes through the SQLAlchemy engine.

Behind PgBouncer in transaction-pooling mode (``?pgbouncer=transaction`` in the URL), a
client's consecutive transactions may run on different server connections, so nothing
may live in the session: the settings that a direct connection sends at startup are set
with ``SET LOCAL`` at the start of every transaction instead, every statement runs inside
a transaction, and no prepared statement outlives its transaction (see
``transaction_settings``)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeAlias, TypeVar

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from .. import citus, sql
from ..group_commit import GroupCommit
from ..schema_window import SchemaState, from_rows
from . import postgres_migrate
from .base import MIGRATION_ATTEMPTS, MIGRATION_LOCK_TIMEOUT, Backend, HandOver, TxWork, lock_key
from .records import ClaimRequest, ClaimRow, Ended, StepWrite, TurnEnd
from .retry import ConnectFailed
from .tx import EngineTx, Tx

T = TypeVar("T")

Write = ClaimRequest | StepWrite | TurnEnd

_APPLY = "SELECT * FROM turnstore_apply($1::turnstore_write[])"
#: On Citus: the writes of one conversation, run on the node that holds it (store/citus.py)
_APPLY_CONVERSATION = "SELECT * FROM turnstore_apply_conversation($1, $2::turnstore_write[])"
IDLE_IN_TRANSACTION_TIMEOUT = "10s"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def server_settings(schema: str | None) -> dict[str, str]:
    """The session settings of every connection turnstore opens.

    ``enable_seqscan = off``: every statement turnstore runs, the foreign-key checks at
    COMMIT included, is a lookup by key (one conversation, one turn) that an index serves.
    While a table is small, or was analyzed when it was, the planner prefers a sequential
    scan, and a connection keeps that generic plan while the table grows: a scan of the
    whole table per lookup. Off, scans are costed out wherever an index applies
    (tests/test_plans.py). ``application_name`` shows in pg_stat_activity which store (and
    schema) a connection belongs to. ``idle_in_transaction_session_timeout``: every
    transaction turnstore opens is a few statements sent back to back, so a session idle
    inside one is a client that stopped (a process paused mid-transaction, by a GC pause or
    SIGSTOP): the server ends it, releasing the conversation's lock, instead of letting it
    block the conversation until the process resumes."""
    settings = {
        "application_name": f"turnstore:{schema}" if schema else "turnstore",
        "enable_seqscan": "off",
        "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT,
    }
    if schema is not None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}, got {schema!r}")
        settings["search_path"] = schema
    return settings


#: The URL query parameter that says the store connects through PgBouncer:
#: ``postgresql://app@pgbouncer.internal:6432/app?pgbouncer=transaction``.
PGBOUNCER = "pgbouncer"
_POOL_MODES = ("transaction", "session")
_REFUSED_PARAMETER = re.compile(r"unsupported startup parameter: \S+")


def pgbouncer_mode(url: URL) -> tuple[URL, bool]:
    """The URL without its ``pgbouncer`` query parameter, and whether it said that the
    store connects through PgBouncer. ``transaction`` is the pooling mode the store is
    built for; ``session`` is accepted too (what works under transaction pooling works
    under session pooling). Statement pooling cannot run a transaction of more than one
    statement, which every turnstore write is: refused."""
    mode = url.query.get(PGBOUNCER)
    if mode is None:
        return url, False
    if mode not in _POOL_MODES:
        raise ValueError(
            f"{PGBOUNCER}={mode!r}: use {PGBOUNCER}=transaction (PgBouncer's pool_mode "
            "transaction or session; statement pooling cannot run turnstore's transactions)"
        )
    return url.difference_update_query([PGBOUNCER]), True


def startup_settings(schema: str | None, *, pgbouncer: bool) -> dict[str, str]:
    """What a connection sends as startup parameters: ``server_settings``, or behind
    PgBouncer only ``application_name``, the one of them PgBouncer accepts (it refuses
    the others, and sets application_name on whichever server connection runs each
    transaction); the rest go in ``transaction_settings``."""
    settings = server_settings(schema)
    if pgbouncer:
        return {"application_name": settings["application_name"]}
    return settings


def transaction_settings(schema: str | None) -> str:
    """The settings of ``server_settings`` but application_name, as the ``SET LOCAL``
    statements that a transaction through PgBouncer begins with (in the same message as
    its BEGIN). They hold until the transaction ends, its COMMIT included, so the deferred
    foreign-key checks that run at COMMIT plan with enable_seqscan off too, and they leave
    nothing behind on the server connection for the next client."""
    settings = server_settings(schema)
    del settings["application_name"]
    return "; ".join(f"SET LOCAL {name} = '{value}'" for name, value in settings.items())


#: a connection of asyncpg's pool (the backend's hot calls)
HotConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"


class SettingsPerTransaction(asyncpg.Connection):
    """An asyncpg connection whose every transaction begins with the store's settings:
    ``Connection.transaction()`` (which SQLAlchemy's dialect uses too) sends its
    ``BEGIN ...`` through ``execute``, and the settings ride in the same message, no round
    trip of their own. (Should asyncpg begin another way, the settings would be missing:
    tests/test_pgbouncer.py reads them in each kind of transaction and at COMMIT.) A
    subclass per store carries its ``local_settings`` (``connection_class``)."""

    local_settings: ClassVar[str] = ""

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        if not args and query.startswith("BEGIN"):
            query = f"{query.rstrip('; ')}; {self.local_settings}"
        return await super().execute(query, *args, timeout=timeout)


def connection_class(schema: str | None) -> type[SettingsPerTransaction]:
    """The asyncpg connection class of a store behind PgBouncer, for ``schema``."""
    return type(
        "SettingsPerTransaction",
        (SettingsPerTransaction,),
        {"local_settings": transaction_settings(schema)},
    )


def pgbouncer_connect_args(schema: str | None) -> dict[str, Any]:
    """asyncpg's connect arguments behind PgBouncer. ``statement_cache_size=0``: PgBouncer
    1.18 does not carry prepared statements from one transaction to the next (a named
    statement prepared on one server connection is missing on the next, or its name taken
    by another client's), so asyncpg uses the unnamed statement, parsed again with each
    execution (its Parse, Describe and Execute reach one server connection: no Sync
    between them)."""
    return {
        "server_settings": startup_settings(schema, pgbouncer=True),
        "statement_cache_size": 0,
        "connection_class": connection_class(schema),
    }


def driver_sql(statement: TextClause, params: tuple[str, ...]) -> str:
    """A named query (``:name`` parameters) as asyncpg takes it (``$1``, ...), to be called
    with the values of ``params`` in that order."""
    compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    if tuple(compiled.positiontup or ()) != params:
        raise ValueError(f"query parameters are {compiled.positiontup}, not {params}")
    return compiled.string


def create_engine(
    url: URL, schema: str | None, pool_size: int, *, pgbouncer: bool = False
) -> AsyncEngine:
    connect_args: dict[str, Any] = {"server_settings": server_settings(schema)}
    if pgbouncer:
        # and SQLAlchemy's own cache of asyncpg statements off: it would keep statements
        # that asyncpg re-parses anyway
        connect_args = {**pgbouncer_connect_args(schema), "prepared_statement_cache_size": 0}
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
    )


async def _no_reset(connection: asyncpg.Connection) -> None:
    return None


def _lock_key_of(write: Write) -> int:
    return write.lock_key


class PostgresBackend(Backend):
    dialect = "postgres"
    #: Claims and ends of turns by the Python rules of ``store.claim`` (the general path,
    #: SQLite's), each in a transaction of its own, instead of in ``turnstore_apply``'s
    #: PL/pgSQL. Off: the PL/pgSQL is one round trip. The tests run the claim, lease,
    #: takeover and hand-over suites both ways, so that the two cannot drift apart
    #: (``store.hooks.use_python_claims``).
    python_claims: bool = False

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str | None,
        pool_size: int = 10,
        *,
        pgbouncer: bool = False,
    ) -> None:
        super().__init__(engine, namespace=schema or "public")
        self.schema = schema
        #: behind PgBouncer (``?pgbouncer=transaction``): every statement in a transaction
        #: that sets the session settings itself
        self.pgbouncer = pgbouncer
        # Reads run in autocommit, without BEGIN/COMMIT round trips (history is
        # append-only and a step commits atomically: statements need no shared snapshot),
        # but behind PgBouncer in a transaction: the settings need one.
        self._read_engine = (
            engine if pgbouncer else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = anyio.Lock()
        #: the tables are sharded by conversation (Citus: store/citus.py), found when the
        #: store opens (``migrate`` or ``applied_versions``)
        self.sharded = False
        self._writes: GroupCommit[Write, Any] = GroupCommit(
            self._apply,
            is_connection_error=self.is_connection_error_anywhere,
            max_concurrent=max(1, min(2, pool_size)),
            # Two writes on one conversation would wait for its advisory lock: the second
            # waits in the queue instead, and joins the next batch.
            conflict_key=_lock_key_of,
        )
        self._replay_sql = driver_sql(self.statements["replay"], ("conversation_id", "last"))

    async def _hot_pool(self) -> asyncpg.Pool:
        """asyncpg's pool for the hot calls: a checkout costs a fraction of SQLAlchemy's,
        and these calls need nothing else from it."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    url = self.engine.url.set(drivername="postgresql")
                    settings: dict[str, Any] = {"server_settings": server_settings(self.schema)}
                    if self.pgbouncer:
                        settings = pgbouncer_connect_args(self.schema)
                    self._pool = await asyncpg.create_pool(
                        url.render_as_string(hide_password=False),
                        min_size=0,
                        max_size=self._pool_size,
                        # Each call is one autocommit statement (behind PgBouncer, one
                        # transaction) that leaves no session state behind (its advisory
                        # lock is transaction-scoped): skip the default reset's extra
                        # round trip on every release. (The pool rolls back a transaction
                        # left open by a cancelled call before it runs this.)
                        reset=_no_reset,
                        **settings,
                    )
        return self._pool

    @asynccontextmanager
    async def _hot_connection(self) -> AsyncIterator[HotConnection]:
        """A connection of the hot pool. A failure to get one is ``ConnectFailed``: nothing
        of the call was sent."""
        try:
            pool = await self._hot_pool()
            conn = await pool.acquire()
        except Exception as exc:
            raise ConnectFailed(str(exc)) from exc
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        async with self._hot_connection() as conn:
            if self.pgbouncer:
                async with _transaction(conn):
                    return await getattr(conn, method)(sql, *args)
            return await getattr(conn, method)(sql, *args)

    async def reset_connections(self) -> None:
        if self._pool is not None:
            await self._pool.expire_connections()
        await super().reset_connections()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().close()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        # Reads run in autocommit: no BEGIN/ROLLBACK round trips. History is append-only
        # and a step commits atomically, so statements need no shared snapshot.
        async with _connected(self._read_engine) as conn:
            yield EngineTx(conn, self.statements)

    def group_commit(self) -> GroupCommit[Any, Any]:
        return self._writes

    def _set_sharded(self, sharded: bool) -> None:
        """On Citus, a batch of writes is the writes of one conversation, one call that
        runs on the node holding it (store/citus.py, docs/scaling.md): batches of one
        write (two writes of a conversation are never in flight at once), as many in
        flight as the pool has connections."""
        if sharded == self.sharded:
            return
        self.sharded = sharded
        if sharded:
            self._writes = GroupCommit(
                self._apply,
                is_connection_error=self.is_connection_error_anywhere,
                max_concurrent=max(1, self._pool_size),
                max_batch=1,
                conflict_key=_lock_key_of,
            )

    async def transaction(self, conversation_id: str, work: TxWork[T], *, linger: float = 0.0) -> T:
        # The general path (rare: recovery, polls, checkpoints) is not batched: no linger.
        if self.sharded:
            return await self._sharded_transaction(conversation_id, work)
        async with _connected(self.engine) as conn, conn.begin():
            tx = EngineTx(conn, self.statements)
            await tx.scalar("lock_conversation", lock_key=self.lock_key(conversation_id))
            return await work(tx)

    async def _sharded_transaction(self, conversation_id: str, work: TxWork[T]) -> T:
        """The general path on Citus: the conversation's lock taken on the node that holds
        it (turnstore_lock, force-delegated), and a worker's refusal at COMMIT raised as
        PostgreSQL raises it on one server (``citus.refusals_raised``)."""
        async with (
            _connected(self.engine) as conn,
            citus.refusals_raised(await self._driver(conn)),
            conn.begin(),
        ):
            tx = EngineTx(conn, self.statements)
            await tx.scalar(
                "lock_conversation_sharded",
                conversation_id=conversation_id,
                lock_key=self.lock_key(conversation_id),
            )
            return await work(tx)

    async def history_rows(self, conversation_id: str, last: int | None) -> Sequence[Any]:
        return await self._call(  # type: ignore[no-any-return]
            "fetch", self.statements_text["history_window_driver"], conversation_id, last or 0
        )

    async def replay_rows(self, conversation_id: str, last: int | None) -> Sequence[Any]:
        return await self._call(  # type: ignore[no-any-return]
            "fetch", self._replay_sql, conversation_id, last or 0
        )

    async def commit_step(self, step: StepWrite) -> str | None:
        return (await self._writes.submit(step))[1]  # type: ignore[no-any-return]

    async def claim_fast(self, request: ClaimRequest, *, linger: float = 0.0) -> ClaimRow | None:
        if self.python_claims:
            return None
        answer = await self._writes.submit(request, linger=linger)
        _, decision, turn_id, status, epoch, next_position = answer
        return ClaimRow(decision, turn_id, status, epoch, next_position)

    async def end_turn(self, end: TurnEnd, hand_over: HandOver) -> Ended:
        if self.python_claims:
            return await super().end_turn(end, hand_over)
        # turnstore_apply hands the conversation over itself (the same rules, in SQL).
        _, refused, turn_id, status, epoch, next_position = await self._writes.submit(end)
        if turn_id is None:
            return Ended(refused)
        return Ended(refused, ClaimRow("claimed", turn_id, status, epoch, next_position))

    async def _apply(self, writes: Sequence[Write]) -> list[Any]:
        """One batch of writes in one autocommit call: the function is the transaction
        (behind PgBouncer, inside BEGIN and COMMIT, which set the session's settings)."""
        records = [as_record(w) for w in writes]
        if self.sharded:
            rows = await self._apply_sharded(writes[0].conversation_id, records)
        else:
            async with self._hot_connection() as conn:
                if self.pgbouncer:
                    async with _transaction(conn):
                        rows = await conn.fetch(_APPLY, records)
                else:
                    rows = await conn.fetch(_APPLY, records)
        answers: list[Any] = [None] * len(writes)
        for row in rows:
            answers[row[0] - 1] = row
        return answers

    async def _apply_sharded(self, conversation_id: str, records: list[Any]) -> Any:
        """The writes of one conversation, in one call run on the node that holds it."""
        async with self._hot_connection() as conn, citus.refusals_raised(conn):
            if self.pgbouncer:
                async with _transaction(conn):
                    return await conn.fetch(_APPLY_CONVERSATION, conversation_id, records)
            return await conn.fetch(_APPLY_CONVERSATION, conversation_id, records)

    async def _driver(self, conn: Any) -> asyncpg.Connection:
        raw = await conn.get_raw_connection()
        return raw.driver_connection  # type: ignore[no-any-return]

    async def applied_versions(self) -> list[int]:
        try:
            return await self._applied_versions()
        except Exception as exc:
            refused = _refused_parameter(exc, self.pgbouncer)
            if refused is None:
                raise
        # raised outside the handler: a mistake in the URL, not a failure to retry
        raise ValueError(refused)

    async def _applied_versions(self) -> list[int]:
        return list((await self._schema_state()).versions)

    async def schema_state(self) -> SchemaState:
        try:
            return await self._schema_state()
        except Exception as exc:
            refused = _refused_parameter(exc, self.pgbouncer)
            if refused is None:
                raise
        raise ValueError(refused)  # outside the handler, as in applied_versions

    async def _schema_state(self) -> SchemaState:
        # through SQLAlchemy's connection: it reads in a transaction, whose BEGIN carries
        # the search path behind PgBouncer
        async with self.engine.connect() as conn:
            exists = await conn.scalar(text("SELECT to_regclass('turnstore_migrations')"))
            if exists is None:
                return SchemaState()
            rows = await conn.execute(text("SELECT * FROM turnstore_migrations"))
            state = from_rows([dict(r._mapping) for r in rows])
            self._set_sharded(await citus.is_sharded(await self._driver(conn)))
            return state

    async def migrate(
        self,
        *,
        upto: int | None = None,
        known: Sequence[sql.Migration] | None = None,
        lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
        attempts: int = MIGRATION_ATTEMPTS,
    ) -> list[int]:
        try:
            async with self.engine.connect() as conn:
                driver = await self._driver(conn)
                applied = await postgres_migrate.migrate(
                    driver,
                    schema=self.schema,
                    lock=lock_key(self.namespace, "migrations"),
                    pgbouncer=self.pgbouncer,
                    known=tuple(known if known is not None else sql.migrations(self.dialect)),
                    upto=upto,
                    lock_timeout=lock_timeout,
                    attempts=attempts,
                )
                await self._distribute(driver, applied)
                return applied
        except Exception as exc:
            refused = _refused_parameter(exc, self.pgbouncer)
            if refused is None:
                raise
        raise ValueError(refused)  # outside the handler, as in applied_versions

    async def _distribute(self, driver: asyncpg.Connection, applied: list[int]) -> None:
        """On a Citus coordinator, the tables distributed by conversation once the schema
        has every migration through ``citus.SHARDABLE_FROM`` (whose keys all name the
        conversation; the migrations ran on the tables as on one server), in a transaction
        holding the migration lock. A schema migrated only partway (``migrate --to``) stays
        on the coordinator."""
        if not await citus.has_citus(driver):
            self._set_sharded(False)
            return
        async with postgres_migrate.locked_transaction(
            driver, lock_key(self.namespace, "migrations")
        ):
            state = await postgres_migrate.read_state(driver)
            if state.version >= citus.SHARDABLE_FROM and (
                applied or not await citus.is_sharded(driver)
            ):
                await citus.distribute(driver)
        self._set_sharded(await citus.is_sharded(driver))

    def is_connection_error(self, exc: BaseException) -> bool:
        # InternalClientError: asyncpg reports a pooled connection that the server terminated
        # while it sat idle as "cannot switch to state ...; another operation is in progress".
        # Retrying is safe whatever was sent: a step number commits at most once.
        if isinstance(
            exc,
            asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.exceptions.InternalClientError
            # the server is shutting down, crashed, or starting up (57P01..57P03), or full
            | asyncpg.exceptions.AdminShutdownError
            | asyncpg.exceptions.CrashShutdownError
            | asyncpg.exceptions.CannotConnectNowError
            | asyncpg.exceptions.TooManyConnectionsError,
        ):
            return True
        if isinstance(exc, ConnectionError | OSError):
            return True
        return super().is_connection_error(exc)

    def is_rolled_back(self, exc: BaseException) -> bool:
        return isinstance(
            exc,
            asyncpg.SerializationError
            | asyncpg.DeadlockDetectedError
            | asyncpg.exceptions.LockNotAvailableError,
        )

    def translate(self, exc: BaseException) -> BaseException:
        from ..errors import IntegrityViolation

        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return IntegrityViolation(f"the database refused the write: {exc}")
        return super().translate(exc)


_NO_STEP = (None,) * 9  # step .. is_error of a write that carries no step


def _step_fields(step: StepWrite | None) -> tuple[Any, ...]:
    if step is None:
        return _NO_STEP
    return (
        step.step,
        step.position,
        step.content_json,
        step.call_ids,
        step.tool_names,
        step.arguments_json,
        step.call_data_json,
        step.results_json,
        step.is_error,
    )


def as_record(w: Write) -> tuple[Any, ...]:
    """A write as a ``turnstore_write`` record (schema/postgres/0003_group_commit.sql)."""
    if isinstance(w, StepWrite):
        return ("step", w.lock_key, w.conversation_id, w.turn_id, w.epoch, w.lease_seconds,
                None, None, None, None, None, None, None,
                *_step_fields(w), None, None)  # fmt: skip
    if isinstance(w, TurnEnd):
        final = w.final
        return ("end", w.lock_key, w.conversation_id, w.turn_id, w.epoch, w.lease_seconds,
                None, None, None, None, None, None, None,
                *_step_fields(final), w.status, w.error)  # fmt: skip
    return ("claim", w.lock_key, w.conversation_id, w.turn_id, None, w.lease_seconds,
            w.idempotency_key, w.content_hash, w.owner, w.window_seconds, w.fail_when_busy,
            w.first, w.retry,
            None, None, w.content_json, None, None, None, None, None, None,
            None, None)  # fmt: skip


def _refused_parameter(exc: BaseException, pgbouncer: bool) -> str | None:
    """What to do about a connection that PgBouncer refused for its startup parameters
    (the first thing ``Store.open`` does is ``migrate`` or ``applied_versions``)."""
    refused = _REFUSED_PARAMETER.search(str(exc))
    if refused is None or pgbouncer:
        return None
    return (
        f"the server refused a startup parameter ({refused[0]}): this is PgBouncer; "
        f"add ?{PGBOUNCER}=transaction to the URL (docs/operations.md, Behind PgBouncer)"
    )


@asynccontextmanager
async def _transaction(conn: HotConnection) -> AsyncIterator[None]:
    """``conn.transaction()``, except that a connection that broke inside it raises what
    broke it (asyncpg's own block raises "the underlying connection is closed" instead).
    A rollback cut short by a cancellation is completed by the pool, which rolls back a
    connection's open transaction before it pools the connection again."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException:
        # InterfaceError: the connection is closed (and gone back to the pool)
        with contextlib.suppress(asyncpg.InterfaceError):
            await transaction.rollback()
        raise
    await transaction.commit()


@asynccontextmanager
async def _connected(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of the engine's pool; a failure to connect is ``ConnectFailed``."""
    conn = engine.connect()
    try:
        await conn.start()
    except Exception as exc:
        raise ConnectFailed(str(exc)) from exc
    try:
        yield conn
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()


def postgres_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def make_backend(url: str | URL, schema: str | None, pool_size: int) -> PostgresBackend:
    """The backend of a PostgreSQL URL, direct or through PgBouncer (``pgbouncer_mode``)."""
    parsed, pgbouncer = pgbouncer_mode(postgres_url(url))
    engine = create_engine(parsed, schema, max(2, pool_size // 4), pgbouncer=pgbouncer)
    return PostgresBackend(engine, schema, pool_size, pgbouncer=pgbouncer)
