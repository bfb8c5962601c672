"""The interface every system under test implements, and the values the driver passes it.

The driver (``benchmarks.driver``) calls, for each turn::

    turn = await adapter.begin_turn(conversation_id, user_text, key)   # or a Duplicate
    for each of the S steps:
        await adapter.step_started(turn, assistant_text, calls)        # model answered
        await adapter.tool_finished(turn, result)                      # once per tool, in
                                                                       # the order they finish
        await adapter.commit_step(turn, assistant_text, calls, results)
    await adapter.finish_turn(turn)

and, when the turn is interrupted (its cancel scope fired) or an adapter call raised, instead
of the rest: ``await adapter.interrupt_turn(turn, partial)`` in a shielded scope.

``step_started`` and ``tool_finished`` default to doing nothing: a system that commits a step
atomically buffers nothing there and writes in ``commit_step``; a system that persists events
as they happen (the naive design) writes there. The step-commit latency the driver records is
the time spent in all three calls for the step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from ..checker import CheckRow

Backend = Literal["postgres", "sqlite"]

INTERRUPTED = "interrupted: the turn ended before this tool call returned a result"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One of a step's parallel tool calls. ``id`` looks like ``call_<24 hex>``."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of one tool call; ``output`` is an HTML snippet or an error text."""

    call_id: str
    name: str
    output: str
    is_error: bool = False


def interrupted_result(call: ToolCall) -> ToolResult:
    """The explicit error result written for a call that never returned."""
    return ToolResult(call.id, call.name, INTERRUPTED, is_error=True)


@dataclass(slots=True)
class PartialStep:
    """The step a turn was in when it was interrupted or failed: what the model answered and
    the results of the tools that finished before that. ``None`` is passed instead when the
    turn ended between steps."""

    assistant_text: str
    calls: tuple[ToolCall, ...]
    results: list[ToolResult] = field(default_factory=list)

    def completed(self) -> tuple[ToolResult, ...]:
        """The finished results plus an interrupted result for every call without one."""
        done = {r.call_id for r in self.results}
        return (*self.results, *(interrupted_result(c) for c in self.calls if c.id not in done))


class Duplicate:
    """``begin_turn``'s answer to a repeated idempotency key: no second turn and no second
    user message were created. ``wait`` waits for the first turn's outcome where the system
    can (the default returns at once)."""

    async def wait(self) -> None:
        return None


DUPLICATE = Duplicate()


class TurnRefused(Exception):
    """``begin_turn`` refused the turn because the conversation is busy (counted, not an
    error)."""


class UnsupportedBackend(Exception):
    """The system does not run on this database (raised by a factory)."""


@dataclass(frozen=True, slots=True)
class AdapterOptions:
    """What a factory gets: the backend of ``--db`` and the connection budget."""

    backend: Backend = "postgres"
    pool_size: int = 16


@dataclass(frozen=True, slots=True)
class PreloadTurn:
    """A finished turn of history written before the timed run (``--preload``)."""

    conversation_id: str
    user_text: str
    steps: tuple[tuple[str, tuple[ToolCall, ...], tuple[ToolResult, ...]], ...]


TurnT = TypeVar("TurnT")


class Adapter(ABC, Generic[TurnT]):
    """One system under test. Instances are used for one run only: ``setup`` once, then any
    number of concurrent turns, then ``read_back`` and ``teardown``."""

    #: name in the registry, the table and the JSON
    name: ClassVar[str] = "?"
    #: True if ``begin_turn`` honours idempotency keys; the driver then sends a double submit
    #: twice with one key, otherwise twice without a key (as a browser does)
    supports_idempotency: ClassVar[bool] = False
    #: True if the adapter's lock waits are known: measured with ``record_lock_wait``, or
    #: none because it takes no lock. False (shown as n/a) for locks it cannot observe.
    reports_lock_wait: ClassVar[bool] = False
    #: True if rows carry a stored position (the checker then counts position gaps)
    stores_positions: ClassVar[bool] = True
    #: True if the system can end a turn in the write of its last step: the driver then
    #: calls ``finish_with_step`` for a turn's last step instead of ``commit_step`` and
    #: ``finish_turn`` (an agent runtime knows the step is the last when it commits it)
    ends_turn_with_last_step: ClassVar[bool] = False

    def __init__(self, options: AdapterOptions) -> None:
        self.options = options
        self.lock_waits_ms: list[float] = []
        #: anything else worth showing (e.g. unique-violation retries), by name
        self.counters: Counter[str] = Counter()

    def record_lock_wait(self, ms: float) -> None:
        self.lock_waits_ms.append(ms)

    # --- lifecycle ------------------------------------------------------------------------

    @abstractmethod
    async def setup(self, url: str, schema: str) -> None:
        """Create fresh tables in ``schema`` (PostgreSQL: a dedicated schema; SQLite: see
        ``DbTarget.sqlite_file``) and open connections. ``url`` is the ``--db`` URL as given;
        ``benchmarks.dbtarget.parse_db_url`` converts it."""

    @abstractmethod
    async def teardown(self) -> None:
        """Close connections and drop everything ``setup`` created. Must not raise if
        ``setup`` failed half-way."""

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        """Write finished history before the run. The default goes through the normal turn
        path (correct but slow); override with a bulk load for large ``--preload``."""
        for t in turns:
            turn = await self.begin_turn(t.conversation_id, t.user_text, None)
            assert not isinstance(turn, Duplicate)
            for text, calls, results in t.steps:
                await self.step_started(turn, text, calls)
                for r in results:
                    await self.tool_finished(turn, r)
                await self.commit_step(turn, text, calls, results)
            await self.finish_turn(turn)

    # --- the turn protocol ----------------------------------------------------------------

    @abstractmethod
    async def begin_turn(
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> TurnT | Duplicate:
        """Start a turn and store its user message. Return ``DUPLICATE`` (or a ``Duplicate``)
        for a repeated key; raise ``TurnRefused`` if the conversation is busy and the system
        refuses rather than waits."""

    async def step_started(
        self, turn: TurnT, assistant_text: str, calls: Sequence[ToolCall]
    ) -> None:
        """The model answered with ``assistant_text`` and ``calls`` (tools start now)."""

    async def tool_finished(self, turn: TurnT, result: ToolResult) -> None:
        """One tool of the current step returned."""

    @abstractmethod
    async def commit_step(
        self,
        turn: TurnT,
        assistant_text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
    ) -> None:
        """Make the step durable. When this returns the driver counts the step as committed
        and the checker will look for it."""

    @abstractmethod
    async def finish_turn(self, turn: TurnT) -> None:
        """The turn ended normally."""

    async def finish_with_step(
        self,
        turn: TurnT,
        assistant_text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
    ) -> None:
        """Commit the turn's last step and end the turn, where ``ends_turn_with_last_step``
        says the system does both at once. When this returns the step is committed (as
        after ``commit_step``) and the turn has ended (as after ``finish_turn``)."""
        await self.commit_step(turn, assistant_text, calls, results)
        await self.finish_turn(turn)

    @abstractmethod
    async def interrupt_turn(self, turn: TurnT, partial: PartialStep | None) -> None:
        """The turn was interrupted (or an adapter call raised) during ``partial``, or between
        steps if ``partial`` is None. Runs shielded from cancellation. Do what the system
        does on an abort: e.g. commit the partial step with interrupted results, or nothing."""

    # --- the checker's view ---------------------------------------------------------------

    @abstractmethod
    async def read_back(self) -> list[CheckRow]:
        """Every stored message of this run in the checker's canonical shape, read with a
        separate connection straight from the tables (not through the system's own read API,
        so that the checker stays independent of it); see ``benchmarks.readback``."""
