"""The interface every backend offers the store. A backend holds only what differs between
databases: how a write transaction serialises one conversation, the SQL dialect (its
``schema/<dialect>/`` files), the hot-path step commit and claim, and how driver errors
map to ours. Beside it: ``tx`` (a transaction's named queries), ``records`` (what a backend
takes and returns), ``fenced`` (the fenced writes all backends share) and ``retry`` (the
retry policy).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from .. import sql
from ..errors import IntegrityViolation
from ..schema_window import SchemaState
from ..sql import Migration
from .fenced import commit_step_in, refusal
from .records import ClaimRequest, ClaimRow, Ended, StepWrite, TurnEnd
from .retry import DEFAULT_RETRY_SECONDS, ConnectFailed, Failure, causes, retrying
from .tx import EngineTx, Tx

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

HandOver = Callable[[Tx, TurnEnd], Awaitable[ClaimRow | None]]
TxWork = Callable[[Tx], Coroutine[Any, Any, T]]


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
                return Ended(await refusal(tx, end.turn_id, end.conversation_id))
            await tx.run(
                "drop_staged_steps", turn_id=end.turn_id, conversation_id=end.conversation_id
            )
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
        return any(self.is_connection_error(e) for e in causes(exc))

    def is_rolled_back(self, exc: BaseException) -> bool:
        """True for a transient refusal after which the database rolled the transaction back
        (``database is locked``, a serialization failure, a deadlock): nothing landed, and
        the same call may succeed a moment later."""
        return False

    def failure(self, exc: BaseException) -> Failure | None:
        """What a failed call tells of its write: ``"not_sent"`` (nothing reached the
        database, or it rolled back), ``"unknown"`` (the connection broke after the call was
        sent: it may have committed), or None (not a transient failure: do not retry)."""
        found = list(causes(exc))
        if any(isinstance(e, ConnectFailed) for e in found):
            return "not_sent"
        if any(self.is_rolled_back(e) for e in found):
            return "not_sent"
        if any(self.is_connection_error(e) for e in found):
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
        return await retrying(self, attempt, write=write)

    async def reset_connections(self) -> None:
        """Drop pooled connections (after a broken one: the server may have restarted)."""
        await self.engine.dispose(close=False)

    def translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, IntegrityError):
            return IntegrityViolation(f"the database refused the write: {exc.orig}")
        return exc

    async def close(self) -> None:
        await self.engine.dispose()
