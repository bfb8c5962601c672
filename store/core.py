"""What beginning and running a turn need of their store, handed to them explicitly:
``claim`` and ``turn`` take a ``Core`` and import no ``Store``. The store makes one when it
opens and keeps it; the imports go one way, ``store`` → ``claim`` → ``turn`` → ``core``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backends.base import Backend, HandOver
from .config import StoreConfig
from .messages import Limits
from .wakeups import LocalWakeups


@dataclass(slots=True, eq=False)
class Core:
    backend: Backend
    config: StoreConfig
    #: the name this process's turns carry as their lease's owner
    owner: str
    #: inside the transaction that ends a turn, start the next turn in line (the claim
    #: rules, ``claim.hand_over``); the backends call it
    hand_over: HandOver
    #: tells waiters in this process what they wait for
    wakeups: LocalWakeups = field(default_factory=LocalWakeups)
    #: claims whose outcome is unknown, by (conversation, idempotency key or content
    #: hash): the same submit again reuses the turn id, to be answered exactly
    unknown_claims: dict[tuple[str, str], str] = field(default_factory=dict)
    #: claim decisions asked of the database: [by first submits, by polls of queued ones]
    #: (``store.hooks.claim_decisions``)
    claim_decisions: list[int] = field(default_factory=lambda: [0, 0])

    @property
    def limits(self) -> Limits:
        return self.config.limits
