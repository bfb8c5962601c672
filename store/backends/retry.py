"""The retry policy: a call that fails transiently (a broken connection, a server restarting,
``database is locked``, a serialization failure, a deadlock) is tried again with jittered
exponential backoff for a while; then what it raises says what it may have left behind.
Which failures are transient, and what each tells of a write, the backends say
(``Backend.failure``)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Literal, Protocol, TypeVar

import anyio

from ..errors import OutcomeUnknown, StoreUnavailable, WriteNotApplied

T = TypeVar("T")
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


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _unavailable(exc: BaseException, *, write: bool, maybe_landed: bool) -> StoreUnavailable:
    why = short(exc)
    if not write:
        return StoreUnavailable(f"the database is unavailable ({why}); retry later")
    if maybe_landed:
        return OutcomeUnknown(
            f"the connection broke after the write was sent ({why}): it may have committed. "
            "Call the same write again once the database is back: it is answered exactly"
        )
    return WriteNotApplied(f"the database is unavailable ({why}); nothing was written. Retry later")


def causes(exc: BaseException) -> Iterator[BaseException]:
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


class Transient(Protocol):
    """What the policy asks of a database about a failed call (``Backend`` answers)."""

    retry_seconds: float

    def failure(self, exc: BaseException) -> Failure | None: ...

    def is_rolled_back(self, exc: BaseException) -> bool: ...

    async def reset_connections(self) -> None: ...


async def retrying(db: Transient, attempt: Callable[[], Awaitable[T]], *, write: bool = True) -> T:
    """Run ``attempt`` (a read, or a write made safe to repeat), retrying transient failures
    for up to ``db.retry_seconds``. When the budget runs out: ``WriteNotApplied`` if no
    attempt can have landed, ``OutcomeUnknown`` if one may have (``StoreUnavailable`` for a
    read)."""
    deadline = time.monotonic() + db.retry_seconds
    delay = _FIRST_RETRY_S
    maybe_landed = False
    while True:
        try:
            return await attempt()
        except Exception as exc:
            failure = db.failure(exc)
            if failure is None:
                raise
            maybe_landed = maybe_landed or failure == "unknown"
            if not any(db.is_rolled_back(e) for e in causes(exc)):
                # the server may have restarted: no pooled connection is good
                await db.reset_connections()
            if time.monotonic() + delay > deadline:
                raise _unavailable(exc, write=write, maybe_landed=maybe_landed) from exc
            log.warning("database unavailable (%s); retrying in %.2fs", short(exc), delay)
        await anyio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, _MAX_RETRY_S)
