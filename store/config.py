"""How a store behaves under contention and failure."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backends.retry import DEFAULT_RETRY_SECONDS
from .messages import Limits


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Behaviour under contention and failure. The defaults suit an interactive agent."""

    lease_seconds: float = 30.0
    """How long a turn owns its conversation without a sign of life (a committed step or a
    heartbeat). After that another submit may take the conversation over."""
    heartbeat_seconds: float | None = None
    """How often ``async with turn`` renews the lease; default a third of the lease."""
    busy_timeout: float = 30.0
    """How long ``begin_turn(on_busy="wait")`` waits for a busy conversation by default."""
    duplicate_window_seconds: float = 10.0
    """Keyless submits: the same user message while its turn runs, or this many seconds
    after it ended, is the same submit. 0 turns keyless de-duplication off."""
    poll_min_seconds: float = 0.01
    """A queued submit polls the database after this long, doubling up to the maximum (a
    turn ending in the same process wakes the oldest local waiter at once)."""
    poll_max_seconds: float = 0.1
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    """How long a call retries transient failures (a broken connection, a server
    restarting, ``database is locked``, a serialization failure) with jittered backoff
    before it raises ``WriteNotApplied`` or ``OutcomeUnknown`` (``StoreUnavailable`` for a
    read). 0: no retry."""
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.heartbeat_seconds is None:
            object.__setattr__(self, "heartbeat_seconds", self.lease_seconds / 3)
