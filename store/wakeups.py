"""In-process wake-ups. A waiting submit in this process is told at once when the turn that
ended before it handed it the conversation; whoever awaits a turn of this process learns
its outcome when it ends, without reading the database. An optimisation only: polling the
database alone is correct, and is what waiters in other processes rely on."""

from __future__ import annotations

import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import anyio

from .outcome import Duplicate, TurnOutcome

if TYPE_CHECKING:
    from .backends.records import ClaimRow

#: outcomes of turns that ended here, kept for late waiters (most recent first out)
_OUTCOMES_KEPT = 4096


class Running(Protocol):
    """What the wake-ups read of a turn that runs in this process (a ``Turn``)."""

    @property
    def id(self) -> str: ...

    @property
    def conversation_id(self) -> str: ...

    @property
    def status(self) -> str: ...


class Waiter:
    """A submit waiting in this process for its conversation. ``handed`` is set when the
    turn before it ended and handed it the conversation."""

    __slots__ = ("event", "handed", "turn_id")

    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        self.event = anyio.Event()
        self.handed: ClaimRow | None = None


class Flight:
    """A submit with an idempotency key being decided in this process. When ``decided``,
    ``duplicate`` is what a second submit of the same key gets, or
    None if the first one failed: the second then asks the database itself."""

    __slots__ = ("content_hash", "decided", "duplicate")

    def __init__(self, content_hash: str) -> None:
        self.content_hash = content_hash
        self.decided = anyio.Event()
        self.duplicate: Duplicate | None = None


class LocalWakeups:
    def __init__(self) -> None:
        self._flights: dict[tuple[str, str], Flight] = {}
        self._queues: dict[str, deque[Waiter]] = {}
        self._ended: dict[str, anyio.Event] = {}
        self._sleepers: Counter[str] = Counter()  # how many sleep on each of _ended
        # turns running here, by turn id and by conversation (a Turn that is dropped
        # without ending leaves them when it is collected)
        self._running: weakref.WeakValueDictionary[str, Running] = weakref.WeakValueDictionary()
        self._holders: weakref.WeakValueDictionary[str, Running] = weakref.WeakValueDictionary()
        # conversations handed over to a waiter here whose Turn is not built yet: turn id
        self._handed: dict[str, str] = {}
        self._waiting: dict[str, Waiter] = {}
        # turns whose first claim this process is deciding, and those of them handed the
        # conversation before their submitter joined the line (it picks the hand-over up)
        self._deciding: set[str] = set()
        self._handed_early: dict[str, ClaimRow] = {}
        self._outcomes: OrderedDict[str, TurnOutcome] = OrderedDict()

    # --- submits being decided ----------------------------------------------------------

    def submit_in_flight(self, conversation_id: str, key: str) -> Flight | None:
        return self._flights.get((conversation_id, key))

    @contextmanager
    def submitting(
        self, conversation_id: str, key: str | None, content_hash: str
    ) -> Iterator[Flight]:
        """Mark a submit with ``key`` as being decided here, until the block ends; a submit
        of the same key meanwhile waits for its decision instead of asking the database."""
        flight = Flight(content_hash)
        slot = (conversation_id, key) if key is not None else None
        if slot is not None and slot not in self._flights:
            self._flights[slot] = flight
        try:
            yield flight
        finally:
            if slot is not None and self._flights.get(slot) is flight:
                del self._flights[slot]
            flight.decided.set()

    @contextmanager
    def deciding(self, conversation_id: str, turn_id: str) -> Iterator[None]:
        """The first claim of ``turn_id`` is in flight here, until its submitter has the
        turn, or has given up. A claim answered 'queued' in the same transaction as the
        end that then hands the conversation to it (SQLite applies a batch's writes in the
        order they were sent) is handed over before its submitter joins the line: the
        hand-over is kept for it, so it needs no poll to learn it."""
        self._deciding.add(turn_id)
        try:
            yield
        finally:
            self._deciding.discard(turn_id)
            never_joined = self._handed_early.pop(turn_id, None) is not None
            if never_joined and self._handed.get(conversation_id) == turn_id:
                del self._handed[conversation_id]

    # --- submits waiting for a conversation -----------------------------------------------

    @contextmanager
    def queued(self, conversation_id: str, turn_id: str) -> Iterator[Waiter]:
        """Join this process's first-come-first-served line for a conversation."""
        waiter = Waiter(turn_id)
        early = self._handed_early.pop(turn_id, None)
        if early is not None:
            waiter.handed = early
            waiter.event.set()
        line = self._queues.setdefault(conversation_id, deque())
        line.append(waiter)
        self._waiting[turn_id] = waiter
        try:
            yield waiter
        finally:
            line.remove(waiter)
            del self._waiting[turn_id]
            if self._handed.get(conversation_id) == turn_id:
                # its Turn (which holds the conversation from now on) is built right after
                # this, with no await between; or never, if the waiter gave up
                del self._handed[conversation_id]
            if waiter.event.is_set() and waiter.handed is None and line:
                line[0].event.set()  # pass an unused wake-up on
            if not line:
                del self._queues[conversation_id]

    @staticmethod
    async def sleep(waiter: Waiter, seconds: float) -> None:
        """Sleep until woken or ``seconds`` have passed."""
        with anyio.move_on_after(seconds):
            await waiter.event.wait()
        if waiter.event.is_set() and waiter.handed is None:
            waiter.event = anyio.Event()

    def wake_next(self, conversation_id: str) -> None:
        """Wake the oldest local waiter of a conversation to try to claim it."""
        line = self._queues.get(conversation_id)
        if line:
            line[0].event.set()

    def handed_over(self, conversation_id: str, started: ClaimRow) -> bool:
        """The turn ``started.turn_id`` was handed ``conversation_id`` (it is running, its
        message written): tell its submitter, and return True, if it waits here."""
        waiter = self._waiting.get(started.turn_id)
        if waiter is None:
            if started.turn_id not in self._deciding:
                return False
            self._handed_early[started.turn_id] = started  # see ``deciding``
            self._handed[conversation_id] = started.turn_id
            return True
        waiter.handed = started
        waiter.event.set()
        self._handed[conversation_id] = started.turn_id
        return True

    # --- turns of this process ----------------------------------------------------------

    def turn_started(self, turn: Running) -> None:
        """``turn`` (a ``Turn``) runs in this process until ``turn_ended``."""
        self._running[turn.id] = turn
        self._holders[turn.conversation_id] = turn
        self._handed.pop(turn.conversation_id, None)

    def lives_here(self, turn_id: str) -> bool:
        """The turn runs, or waits for its conversation, in this process: it will tell its
        waiters here when it ends."""
        turn = self._running.get(turn_id)
        return (turn is not None and turn.status == "running") or turn_id in self._waiting

    def held_here(self, conversation_id: str) -> bool:
        """A turn of this process holds the conversation (or was just handed it and is
        starting): it will hand it over (or wake the line) when it ends."""
        if conversation_id in self._handed:
            return True
        turn = self._holders.get(conversation_id)
        return turn is not None and turn.status == "running"

    def outcome(self, turn_id: str) -> TurnOutcome | None:
        """The ``TurnOutcome`` of a turn that ended in this process, if known."""
        return self._outcomes.get(turn_id)

    def pending_events(self) -> int:
        """How many turns someone here sleeps on (bounded by the sleepers, not by the
        turns ever waited for)."""
        return len(self._ended)

    async def sleep_until_ended(self, turn_id: str, seconds: float) -> None:
        """Sleep up to ``seconds``, or until the turn ends in this process. The event lives
        only while someone sleeps on it: a turn of another process never ends here, and
        must leave nothing behind (its end is seen by a database read)."""
        event = self._ended.setdefault(turn_id, anyio.Event())
        self._sleepers[turn_id] += 1
        try:
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            self._sleepers[turn_id] -= 1
            if not self._sleepers[turn_id]:
                del self._sleepers[turn_id]
                if self._ended.get(turn_id) is event:
                    del self._ended[turn_id]

    def turn_ended(self, conversation_id: str, outcome: TurnOutcome, *, handed_over: bool) -> None:
        """A turn of this process ended with ``outcome`` (a ``TurnOutcome``). Unless it
        handed the conversation over to a waiter here, or another turn here holds it now,
        wake the oldest local waiter: to claim it, or to poll while a turn of another
        process holds it."""
        self._running.pop(outcome.turn_id, None)
        holder = self._holders.get(conversation_id)
        if holder is not None and holder.id == outcome.turn_id:
            del self._holders[conversation_id]
        self._outcomes[outcome.turn_id] = outcome
        if len(self._outcomes) > _OUTCOMES_KEPT:
            self._outcomes.popitem(last=False)
        if not handed_over and not self.held_here(conversation_id):
            # Nobody here was handed it, and no other turn here took it in the same batch
            # (a claim sent with this end): wake the line to claim it, or to poll.
            self.wake_next(conversation_id)
        ended = self._ended.pop(outcome.turn_id, None)
        if ended is not None:
            ended.set()
