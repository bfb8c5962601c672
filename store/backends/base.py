"""What every backend offers the store. A backend holds only what differs between
databases: how a write transaction serialises one conversation, the SQL dialect (its
``schema/<dialect>/`` files), the hot-path step commit, and how driver errors map to ours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import TextClause

from .. import sql
from ..errors import IntegrityViolation, OutcomeUnknown, StoreUnavailable, WriteNotApplied
from ..messages import EncodedStep
from ..schema_window import SchemaState
from ..sql import Migration

if TYPE_CHECKING:
    from ..group_commit import GroupCommit


def lock_key(namespace: str, conversation_id: str) -> int:
    """A stable signed 64-bit key for one conversation: SHA-256 of a namespaced name.
    Stable across processes, hosts and Python versions (unlike ``hash()``)."""
    digest = hashlib.sha256(f"turnstore\x00{namespace}\x00{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


T = TypeVar("T")

#: How long a migration statement waits for a table's lock before it gives up (and the
#: migration is retried): long enough for a hot table's short transactions to finish,
#: short enough that the writes queued behind the waiting migration barely notice.
MIGRATION_LOCK_TIMEOUT = 5.0
#: How many times a migration that timed out on a lock is tried before MigrationBlocked.
MIGRATION_ATTEMPTS = 5
log = logging.getLogger("turnstore")

Failure = Literal["not_sent", "unknown"]
_FIRST_RETRY_S = 0.05
_MAX_RETRY_S = 1.0
#: How long a call retries transient failures by default (``StoreConfig.retry_seconds``):
#: long enough to ride out a PostgreSQL restart or failover of a few seconds.
DEFAULT_RETRY_SECONDS = 15.0


class ConnectFailed(Exception):
    """No connection could be made, so nothing of the call was sent (raised from the
    driver's error by the backends where they connect)."""


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _unavailable(exc: BaseException, *, write: bool, maybe_landed: bool) -> StoreUnavailable:
    why = _short(exc)
    if not write:
        return StoreUnavailable(f"the database is unavailable ({why}); retry later")
    if maybe_landed:
        return OutcomeUnknown(
            f"the connection broke after the write was sent ({why}): it may have committed. "
            "Call the same write again once the database is back: it is answered exactly"
        )
    return WriteNotApplied(f"the database is unavailable ({why}); nothing was written. Retry later")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver error SQLAlchemy wrapped, and their causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]


class Tx(ABC):
    """A transaction (or an autocommit read) that runs the dialect's named queries. Rows
    have attribute access by column name."""

    @abstractmethod
    async def all(self, name: str, **params: Any) -> Sequence[Any]: ...

    @abstractmethod
    async def one(self, name: str, **params: Any) -> Any: ...

    @abstractmethod
    async def scalar(self, name: str, **params: Any) -> Any: ...

    @abstractmethod
    async def run(self, name: str, **params: Any) -> int:
        """Run a write; return the number of rows it touched."""

    @abstractmethod
    async def run_many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None: ...


class EngineTx(Tx):
    """Tx on a SQLAlchemy connection."""

    def __init__(self, conn: AsyncConnection, statements: Mapping[str, TextClause]) -> None:
        self.conn = conn
        self._statements = statements

    async def all(self, name: str, **params: Any) -> Sequence[Row[Any]]:
        return (await self.conn.execute(self._statements[name], params)).all()

    async def one(self, name: str, **params: Any) -> Row[Any] | None:
        return (await self.conn.execute(self._statements[name], params)).first()

    async def scalar(self, name: str, **params: Any) -> Any:
        return (await self.conn.execute(self._statements[name], params)).scalar()

    async def run(self, name: str, **params: Any) -> int:
        return (await self.conn.execute(self._statements[name], params)).rowcount

    async def run_many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self.conn.execute(self._statements[name], list(rows))


async def refusal(tx: Tx, turn_id: str) -> str:
    """Why a fenced write on ``turn_id`` touched nothing: ``'<status>:<steps>'``."""
    state = await tx.one("turn_state", turn_id=turn_id)
    return f"{state.status}:{state.steps}" if state else "missing:-1"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One validated step, ready to insert at ``position`` (the assistant message) and
    ``position + 1 ...`` (one tool row per call, in call order)."""

    lock_key: int
    conversation_id: str
    turn_id: str
    epoch: int
    lease_seconds: float
    step: int
    position: int
    content_json: str
    call_ids: Sequence[str]
    tool_names: Sequence[str]
    arguments_json: Sequence[str]
    call_data_json: Sequence[str | None]
    results_json: Sequence[str]
    is_error: Sequence[bool]

    @classmethod
    def of(
        cls,
        encoded: EncodedStep,
        *,
        lock_key: int,
        conversation_id: str,
        turn_id: str,
        epoch: int,
        lease_seconds: float,
        step: int,
        position: int,
    ) -> StepWrite:
        calls = encoded.calls
        return cls(
            lock_key=lock_key,
            conversation_id=conversation_id,
            turn_id=turn_id,
            epoch=epoch,
            lease_seconds=lease_seconds,
            step=step,
            position=position,
            content_json=encoded.content_json,
            call_ids=[c.id for c in calls],
            tool_names=[c.name for c in calls],
            arguments_json=[c.arguments_json for c in calls],
            call_data_json=[c.provider_data_json for c in calls],
            results_json=[r.content_json for r in encoded.results],
            is_error=[r.is_error for r in encoded.results],
        )

    def same_step(self, encoded: EncodedStep) -> bool:
        """Whether ``encoded`` is this step's content (one encoder wrote both: equal text)."""
        calls, results = encoded.calls, encoded.results
        return (
            self.content_json == encoded.content_json
            and list(self.call_ids) == [c.id for c in calls]
            and list(self.tool_names) == [c.name for c in calls]
            and list(self.arguments_json) == [c.arguments_json for c in calls]
            and list(self.call_data_json) == [c.provider_data_json for c in calls]
            and list(self.results_json) == [r.content_json for r in results]
            and list(self.is_error) == [r.is_error for r in results]
        )

    def matches_rows(self, rows: Sequence[Any]) -> bool:
        """Whether ``rows`` (the ``step_rows`` query at this step's positions) are this
        step as written: same turn, step, message, calls and results. JSON is compared as
        values (PostgreSQL's jsonb keeps neither key order nor spacing)."""
        if len(rows) != 1 + len(self.call_ids):
            return False
        head, tools = rows[0], rows[1:]
        if (head.role, head.turn_id, head.step, head.position) != (
            "assistant",
            self.turn_id,
            self.step,
            self.position,
        ) or _json(head.content) != _json(self.content_json):
            return False
        for i, row in enumerate(tools):
            if (
                row.role != "tool"
                or row.turn_id != self.turn_id
                or row.step != self.step
                or row.tool_call_id != self.call_ids[i]
                or row.tool_name != self.tool_names[i]
                or bool(row.is_error) != bool(self.is_error[i])
                or _json(row.content) != _json(self.results_json[i])
                or _json(row.tool_arguments) != _json(self.arguments_json[i])
                or _json(row.tool_call_data) != _json(self.call_data_json[i])
            ):
                return False
        return True

    def message_rows(self) -> list[dict[str, Any]]:
        """The rows of this step in the shape of the ``insert_message`` query."""
        calls = len(self.call_ids)
        common = {
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "step": self.step,
            "step_position": self.position,
            "tool_call_count": calls,
        }
        rows = [
            {
                **common,
                "position": self.position,
                "role": "assistant",
                "content": self.content_json,
                "tool_call_id": None,
                "tool_name": None,
                "tool_arguments": None,
                "tool_call_data": None,
                "is_error": False,
            }
        ]
        for i in range(calls):
            rows.append(
                {
                    **common,
                    "position": self.position + 1 + i,
                    "role": "tool",
                    "content": self.results_json[i],
                    "tool_call_id": self.call_ids[i],
                    "tool_name": self.tool_names[i],
                    "tool_arguments": self.arguments_json[i],
                    "tool_call_data": self.call_data_json[i],
                    "is_error": self.is_error[i],
                }
            )
        return rows


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """Ending a turn: its fencing token, the status and error, an optional last step, and
    the lease of the turn the conversation is handed over to (if one waits)."""

    lock_key: int
    conversation_id: str
    turn_id: str
    epoch: int
    status: str
    error: str | None
    final: StepWrite | None
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """The inputs of one claim decision (see ``store.claim``)."""

    lock_key: int
    conversation_id: str
    turn_id: str
    idempotency_key: str | None
    content_hash: str
    content_json: str
    owner: str
    lease_seconds: float
    window_seconds: float
    fail_when_busy: bool
    first: bool
    retry: bool


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """A claim decision taken by the database: 'claimed', 'duplicate', 'queued', 'busy',
    'key_reused' or 'recover' (take the general path)."""

    decision: str
    turn_id: str
    status: str | None
    epoch: int
    next_position: int | None


@dataclass(frozen=True, slots=True)
class Ended:
    """What ending a turn did. ``refused`` is None when the turn ended, else
    ``'<status>:<steps>'`` of the turn, and nothing was written. ``handed_to`` is the
    waiting turn that the conversation was handed over to, started in the same transaction
    (its user message written), if there was one."""

    refused: str | None
    handed_to: ClaimRow | None = None


HandOver = Callable[["Tx", TurnEnd], Awaitable[ClaimRow | None]]
TxWork = Callable[["Tx"], Coroutine[Any, Any, T]]


async def commit_step_in(tx: Tx, step: StepWrite) -> str | None:
    """Commit a step inside an open write transaction: check the turn's fencing token,
    then insert. Returns None, or ``'<status>:<steps>'`` having written nothing."""
    touched = await tx.run(
        "fence_step",
        turn_id=step.turn_id,
        conversation_id=step.conversation_id,
        epoch=step.epoch,
        step=step.step,
        lease_seconds=step.lease_seconds,
    )
    if touched != 1:
        return await refusal(tx, step.turn_id)
    await tx.run_many("insert_message", step.message_rows())
    return None


class Backend(ABC):
    """The database-specific half of the store."""

    dialect: str
    #: how long ``retrying`` retries transient failures (the store sets its config's)
    retry_seconds: float = DEFAULT_RETRY_SECONDS

    def __init__(self, engine: AsyncEngine, namespace: str) -> None:
        self.engine = engine
        self.namespace = namespace
        self.statements_text = sql.queries(self.dialect)
        self.statements = {name: text(q) for name, q in self.statements_text.items()}

    def lock_key(self, conversation_id: str) -> int:
        return lock_key(self.namespace, conversation_id)

    def group_commit(self) -> GroupCommit[Any, Any] | None:
        """The group commit that batches this backend's writes (None: it does not)."""
        return None

    def write_batches(self) -> tuple[int, int]:
        """How many batches of writes went to the database, and how many writes they held
        (group commit; ``(0, 0)`` for a backend that does not batch)."""
        writes = self.group_commit()
        return (0, 0) if writes is None else (writes.batches, writes.writes)

    @abstractmethod
    async def transaction(self, conversation_id: str, work: TxWork[T], *, linger: float = 0.0) -> T:
        """Run ``await work(tx)`` in a write transaction that holds ``conversation_id``
        exclusively: committed if it returns, rolled back if it raises. ``work`` may await
        nothing but its ``tx`` (a backend may run it without an event loop) and may run
        again after a rollback (keep its effects in the database). A backend that batches
        writes may hold it up to ``linger`` seconds to share another write's transaction
        (see ``store.group_commit``)."""

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        async with self.engine.connect() as conn:
            yield EngineTx(conn, self.statements)

    async def history_rows(self, conversation_id: str, last: int | None) -> Sequence[Any]:
        """The rows of a conversation's history (about the ``last`` N messages, never
        starting inside a step), as the ``history`` query's columns."""
        from ..history import window_start

        async with self.read() as tx:
            start = await window_start(tx, conversation_id, last)
            return await tx.all("history", conversation_id=conversation_id, from_position=start)

    async def replay_rows(self, conversation_id: str, last: int | None) -> Sequence[Any]:
        """What replay reads of a conversation (about the ``last`` N messages, never
        starting inside a step): the ``replay`` query's columns, JSON as text."""
        async with self.read() as tx:
            return await tx.all("replay", conversation_id=conversation_id, last=last or 0)

    async def commit_step(self, step: StepWrite) -> str | None:
        """Commit one step if the turn still holds its lease. Returns None on success,
        else ``'<status>:<steps>'`` of the turn, having written nothing."""
        return await self.transaction(step.conversation_id, lambda tx: commit_step_in(tx, step))

    async def claim_fast(self, request: ClaimRequest, *, linger: float = 0.0) -> ClaimRow | None:
        """Take the whole claim decision in one round trip, if the backend can; None means
        "use the general path" (``store.claim``), which every backend supports. ``linger``:
        as in ``transaction``."""
        return None

    async def end_turn(self, end: TurnEnd, hand_over: HandOver) -> Ended:
        """End a running turn (committing ``end.final`` first, if given), fenced like a
        step, and in the same transaction hand the conversation over to the next turn in
        line (``hand_over``, the store's decision: see ``store.claim``)."""

        async def work(tx: Tx) -> Ended:
            if end.final is not None:
                refused = await commit_step_in(tx, end.final)
                if refused is not None:
                    return Ended(refused)
            touched = await tx.run(
                "end_turn",
                turn_id=end.turn_id,
                conversation_id=end.conversation_id,
                epoch=end.epoch,
                status=end.status,
                error=end.error,
            )
            if not touched:
                return Ended(await refusal(tx, end.turn_id))
            await tx.run("drop_staged_steps", turn_id=end.turn_id)
            return Ended(None, await hand_over(tx, end))

        return await self.transaction(end.conversation_id, work)

    @abstractmethod
    async def migrate(
        self,
        *,
        upto: int | None = None,
        known: Sequence[Migration] | None = None,
        lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
        attempts: int = MIGRATION_ATTEMPTS,
    ) -> list[int]:
        """Apply the missing migrations in order (``known``: by default this code's; up to
        version ``upto``), under a lock; return the versions applied. On PostgreSQL each
        migration waits at most ``lock_timeout`` seconds for a table's lock, and is tried
        ``attempts`` times before ``MigrationBlocked``."""

    @abstractmethod
    async def applied_versions(self) -> list[int]:
        """The migration versions recorded in the database (empty if none)."""

    @abstractmethod
    async def schema_state(self) -> SchemaState:
        """What the database's migrations table says (read only: no lock, no DDL)."""

    def is_connection_error(self, exc: BaseException) -> bool:
        """True when the connection broke, so that a write's outcome is unknown."""
        return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)

    def is_connection_error_anywhere(self, exc: BaseException) -> bool:
        """``is_connection_error`` of the exception or of anything it wraps or was caused by."""
        return any(self.is_connection_error(e) for e in _causes(exc))

    def is_rolled_back(self, exc: BaseException) -> bool:
        """True for a transient refusal after which the database rolled the transaction back
        (``database is locked``, a serialization failure, a deadlock): nothing landed, and
        the same call may succeed a moment later."""
        return False

    def failure(self, exc: BaseException) -> Failure | None:
        """What a failed call tells of its write: ``"not_sent"`` (nothing reached the
        database, or it rolled back), ``"unknown"`` (the connection broke after the call was
        sent: it may have committed), or None (not a transient failure: do not retry)."""
        causes = list(_causes(exc))
        if any(isinstance(e, ConnectFailed) for e in causes):
            return "not_sent"
        if any(self.is_rolled_back(e) for e in causes):
            return "not_sent"
        if any(self.is_connection_error(e) for e in causes):
            return "unknown"
        return None

    async def retrying(self, attempt: Callable[[], Awaitable[T]], *, write: bool = True) -> T:
        """Run a read or a write, retrying transient failures (a broken connection, a
        server restarting, ``database is locked``, a serialization failure, a deadlock)
        with jittered exponential backoff for up to ``retry_seconds``. Writes are made safe
        to repeat (fencing tokens, turn ids, step numbers checked against the step's content),
        so an attempt whose COMMIT landed is recognised, not written twice.

        When the budget runs out: ``WriteNotApplied`` if no attempt can have landed,
        ``OutcomeUnknown`` if one may have (``StoreUnavailable`` for a read)."""
        deadline = time.monotonic() + self.retry_seconds
        delay = _FIRST_RETRY_S
        maybe_landed = False
        while True:
            try:
                return await attempt()
            except Exception as exc:
                failure = self.failure(exc)
                if failure is None:
                    raise
                maybe_landed = maybe_landed or failure == "unknown"
                if not any(self.is_rolled_back(e) for e in _causes(exc)):
                    # the server may have restarted: no pooled connection is good
                    await self.reset_connections()
                if time.monotonic() + delay > deadline:
                    raise _unavailable(exc, write=write, maybe_landed=maybe_landed) from exc
                log.warning("database unavailable (%s); retrying in %.2fs", _short(exc), delay)
            await anyio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _MAX_RETRY_S)

    async def reset_connections(self) -> None:
        """Drop pooled connections (after a broken one: the server may have restarted)."""
        await self.engine.dispose(close=False)

    def translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, IntegrityError):
            return IntegrityViolation(f"the database refused the write: {exc.orig}")
        return exc

    async def close(self) -> None:
        await self.engine.dispose()
