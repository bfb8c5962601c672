"""``naive``: the Instatic runtime's design (DESIGN.md, bug-report.txt), to show the failures
under load.

Every event is its own transaction: the user message, the assistant text, each tool-call
row, each tool-result row. A position is ``max(position) + 1``, read and then written with no
lock. With ``unique(conversation_id, position)`` two writers that read the same max collide;
the loser re-reads and retries, as an app would, up to ``MAX_ATTEMPTS`` times with a jittered
exponential backoff, after which the event is lost (``EventLost``, counted) and the turn
takes its error path.

There is no idempotency key and no guard against concurrent turns. The runner knows a step's
calls as soon as the model answers and marks them pending before writing their rows; on an
abort or an error it writes an ``ok: false`` "interrupted" result for every pending call
(each in its own transaction). Events are like a JavaScript promise: once started they run
to the end (shielded), so an interruption takes effect between events. The result: a call
marked pending whose row was never written gets an orphan result; two turns racing on one
conversation interleave their rows; a double submit stores the prompt twice.

The SQL lives in an ``EventLog`` per backend (``naive_logs``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from ..checker import CheckRow
from . import instatic_rows as rows_
from .base import (
    Adapter,
    AdapterOptions,
    PartialStep,
    PreloadTurn,
    ToolCall,
    ToolResult,
    interrupted_result,
)
from .naive_logs import EventLog, PositionTaken

MAX_ATTEMPTS = 5
BACKOFF_S = 0.001  # then doubled each retry, with jitter


class EventLost(Exception):
    """An event could not be written: its position was taken ``MAX_ATTEMPTS`` times."""


@dataclass(slots=True)
class NaiveTurn:
    conversation_id: str
    pending: dict[str, ToolCall] = field(default_factory=dict)


class NaiveAdapter(Adapter[NaiveTurn]):
    name = "naive"
    reports_lock_wait = True  # it takes no lock: every wait is 0

    def __init__(self, options: AdapterOptions, log: EventLog) -> None:
        super().__init__(options)
        self.log = log
        self._rng = random.Random(0)

    async def setup(self, url: str, schema: str) -> None:
        await self.log.setup(url, schema, self.options.pool_size)

    async def teardown(self) -> None:
        await self.log.teardown()

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        await self.log.preload(turns)

    async def read_back(self) -> list[CheckRow]:
        return await self.log.read_back()

    # --- the runner's events --------------------------------------------------------------

    async def begin_turn(
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> NaiveTurn:
        await self._event(conversation_id, rows_.user_row(user_text))
        return NaiveTurn(conversation_id)

    async def step_started(
        self, turn: NaiveTurn, assistant_text: str, calls: Sequence[ToolCall]
    ) -> None:
        turn.pending = {c.id: c for c in calls}
        for row in rows_.assistant_rows(assistant_text, calls):
            await self._event(turn.conversation_id, row)

    async def tool_finished(self, turn: NaiveTurn, result: ToolResult) -> None:
        await self._event(turn.conversation_id, rows_.result_row(result))
        turn.pending.pop(result.call_id, None)

    async def commit_step(
        self,
        turn: NaiveTurn,
        assistant_text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
    ) -> None:
        return None  # every event is already committed

    async def finish_turn(self, turn: NaiveTurn) -> None:
        return None

    async def interrupt_turn(self, turn: NaiveTurn, partial: PartialStep | None) -> None:
        for call in list(turn.pending.values()):
            with contextlib.suppress(EventLost):  # counted; the runner logs it and goes on
                await self._event(turn.conversation_id, rows_.result_row(interrupted_result(call)))
            turn.pending.pop(call.id, None)

    async def _event(self, conversation_id: str, row: rows_.Row) -> None:
        await anyio.lowlevel.checkpoint()  # where an interruption takes effect
        with anyio.CancelScope(shield=True):
            for attempt in range(MAX_ATTEMPTS):
                try:
                    await self.log.append(conversation_id, row)
                    return
                except PositionTaken:
                    self.counters["unique violations"] += 1
                    if attempt + 1 < MAX_ATTEMPTS:
                        await anyio.sleep(self._rng.uniform(0.5, 1.5) * BACKOFF_S * 2**attempt)
            self.counters["events lost"] += 1
            raise EventLost(f"{row[0]} event of {conversation_id} lost after {MAX_ATTEMPTS} tries")
