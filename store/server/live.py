"""The turns this service drives, and the step each has open.

The service keeps a handle per running turn it has seen (``Live``), and nothing that the
database does not also hold: a turn it has no handle for (after a restart, or evicted)
is picked up again with ``Store.resume_turn`` and its open step rebuilt from the step it
staged (``store.resume``). Requests on one turn are taken one at a time (a lock per turn).

Events (``POST /v1/turns/{id}/events``) build the open step. Every request is checked
whole before anything is written (a bad event: 422, nothing written), then:
  * a step whose every call has its result is committed at once (one transaction: the
    assistant message and all its results);
  * whatever is left open is staged with the count of events applied (``seq``), in one
    transaction that renews the lease, before the request is acknowledged: a restart
    loses no acknowledged event, and a takeover after the lease commits the open step,
    unanswered calls closed as interrupted.
With ``seq``, a step that a request completes is staged (with the count) before it is
committed, so that a retry after a lost reply is recognised after a restart too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidMessage, LeaseLost, TurnNotFound
from ..messages import INTERRUPTED
from ..resume import buffer_from_payload, check_stageable, read_staged_step, stage_step
from ..store import Store
from ..turn import StepBuffer, Turn
from . import schemas
from .auth import Tenant
from .problems import Problem


@dataclass
class Live:
    turn: Turn
    buffer: StepBuffer | None = None
    #: events of the turn applied (and durable); None when not known (a client that sends
    #: no seq, or a step committed without its count staged)
    events: int | None = 0


def copy_buffer(turn: Turn, buffer: StepBuffer | None) -> StepBuffer:
    if buffer is None:
        return StepBuffer(turn)
    return StepBuffer(
        turn, content=list(buffer.content), calls=list(buffer.calls), results=dict(buffer.results)
    )


def open_step_json(live: Live) -> dict[str, Any] | None:
    """``schemas.OpenStep`` as JSON values (None: no step is open)."""
    buffer = live.buffer
    if buffer is None or not (buffer.content or buffer.calls):
        return None
    return {
        "step": live.turn.steps + 1,
        "calls": [c.id for c in buffer.calls],
        "unanswered": buffer.unanswered,
        "parts": len(buffer.content),
    }


class _Slot:
    """A turn's lock, while requests hold or wait for it (asyncio's: the service runs on
    uvicorn's asyncio loop, and anyio's costs more to make, once per request)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class LiveTurns:
    def __init__(self, store: Store, capacity: int = 10_000) -> None:
        self.store = store
        self.capacity = capacity
        self._live: OrderedDict[str, Live] = OrderedDict()
        self._slots: dict[str, _Slot] = {}

    def add(self, turn: Turn) -> None:
        self._live[turn.id] = Live(turn)
        self._trim()

    def peek(self, turn_id: str) -> Live | None:
        return self._live.get(turn_id)

    def evict(self, turn_id: str) -> None:
        self._live.pop(turn_id, None)

    def _trim(self) -> None:
        while len(self._live) > self.capacity:
            oldest = next(iter(self._live))
            if oldest in self._slots:  # in use: keep it (it is at the end soon)
                self._live.move_to_end(oldest)
                break
            self._live.popitem(last=False)

    @contextlib.asynccontextmanager
    async def hold(self, turn_id: str, tenant: Tenant, epoch: int) -> AsyncIterator[Live]:
        """The turn's handle, for one request: resumed from the database if this service
        has none; 404 for another tenant's turn; ``LeaseLost`` for another epoch. An
        error that leaves the handle's state in doubt drops it (the next request resumes
        it from the database, which is the truth)."""
        slot = self._slots.get(turn_id)
        if slot is None:
            slot = self._slots[turn_id] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                live = self._live.get(turn_id)
                if live is None or live.turn.status != "running":
                    live = await self._resume(turn_id, tenant, epoch)
                elif not tenant.owns(live.turn.conversation_id):
                    raise TurnNotFound(f"no turn {turn_id!r}")
                if live.turn.epoch != epoch:
                    raise LeaseLost(
                        f"turn {turn_id} runs with another epoch than {epoch}: this is not "
                        "the handle that claimed it; nothing was written"
                    )
                self._live.move_to_end(turn_id)
                try:
                    yield live
                except (InvalidMessage, Problem):
                    raise  # refused before anything was written: the handle is as it was
                except BaseException:
                    self.evict(turn_id)
                    raise
                finally:
                    if live.turn.status != "running":
                        self.evict(turn_id)
        finally:
            slot.users -= 1
            if not slot.users:
                del self._slots[turn_id]

    async def _resume(self, turn_id: str, tenant: Tenant, epoch: int) -> Live:
        store = self.store
        info = await store.turn_status(turn_id)
        if not tenant.owns(info.conversation_id):
            raise TurnNotFound(f"no turn {turn_id!r}")
        turn = await store.resume_turn(turn_id, epoch=epoch)
        live = Live(turn, None, None)
        staged = await read_staged_step(store, turn, turn.steps + 1)
        if staged is not None:
            live.buffer, meta = buffer_from_payload(turn, staged)
            live.events = meta.get("events")
            if live.buffer.calls and not live.buffer.unanswered:
                # complete, staged before its commit, and not committed: commit it now
                message, results = live.buffer.closed(INTERRUPTED)
                await turn.commit_step(message, results)
                live.buffer = None
        else:
            done = await read_staged_step(store, turn, turn.steps) if turn.steps else None
            if done is not None:
                _, meta = buffer_from_payload(turn, done)
                live.events = meta.get("events")
            elif turn.steps == 0:
                live.events = 0
        self._live[turn_id] = live
        self._trim()
        return live

    # --- events -----------------------------------------------------------------------

    async def apply_events(
        self, live: Live, events: Sequence[schemas.Event], seq: int | None
    ) -> dict[str, Any]:
        """The events applied; ``schemas.EventsAck`` as JSON values."""
        turn = live.turn
        applied = live.events
        if seq is not None and applied is not None:
            if seq > applied:
                raise Problem(
                    409,
                    "EventGap",
                    f"turn {turn.id} holds {applied} events; these start at {seq}: send "
                    f"the events from seq {applied} on",
                    events=applied,
                )
            skip = applied - seq
            if skip >= len(events):
                return self._ack(live, [], duplicate=True)
            events = events[skip:]
        base = applied if applied is not None else seq
        total = None if base is None else base + len(events)

        # Plan on copies: every event is checked before anything is written.
        work: StepBuffer | None = copy_buffer(turn, live.buffer) if live.buffer else None
        commits: list[StepBuffer] = []
        new_calls: list[str] = []
        force_stage = False
        for i, event in enumerate(events):
            where = f"events[{i}]"
            if isinstance(
                event, schemas.TextEvent | schemas.ReasoningEvent | schemas.ToolCallEvent
            ):
                if work is not None and work.results:
                    if work.unanswered:
                        raise InvalidMessage(
                            f"{where}: the open step has results and unanswered calls "
                            f"{work.unanswered}: send their results (or end the step with "
                            "interrupt_unanswered) before the next model output"
                        )
                    commits.append(work)
                    work = None
                if work is None:
                    work = StepBuffer(turn)
                _apply(work, event, where)
                if isinstance(event, schemas.ToolCallEvent):
                    new_calls.append(event.id)
            elif isinstance(event, schemas.ToolResultEvent):
                if work is None:
                    raise InvalidMessage(
                        f"{where}: result for {event.call_id!r}, but no step is open"
                    )
                _apply(work, event, where)
                if not work.unanswered:
                    commits.append(work)
                    work = None
            elif isinstance(event, schemas.EndStepEvent):
                if work is None:
                    continue
                if work.unanswered and not event.interrupt_unanswered:
                    raise InvalidMessage(
                        f"{where}: calls {work.unanswered} have no result; send them, or "
                        "end the step with interrupt_unanswered"
                    )
                commits.append(work)
                work = None
            else:
                force_stage = True
        if len(set(new_calls)) != len(new_calls):
            raise InvalidMessage("duplicate tool call id within the request")
        store = self.store
        for buffer in commits:
            check_stageable(store, buffer)
        if work is not None:
            check_stageable(store, work)
        await self._check_unused(turn, new_calls)

        # Write.
        committed: list[int] = []
        for n, buffer in enumerate(commits):
            last = n == len(commits) - 1 and work is None
            if last and seq is not None and total is not None:
                await stage_step(store, turn, buffer, {"events": total})
            message, results = buffer.closed(INTERRUPTED)
            committed.append(await turn.commit_step(message, results))
            live.buffer = None
            live.events = total if last else None
        if work is not None:
            await stage_step(store, turn, work, {"events": total})
        elif force_stage and not commits:
            await turn.heartbeat()
        live.buffer = work
        live.events = total
        return self._ack(live, committed)

    async def _check_unused(self, turn: Turn, call_ids: list[str]) -> None:
        """Refuse (422, nothing written) call ids the conversation already has: neither the
        step nor a takeover could commit them."""
        if not call_ids:
            return
        store = self.store

        async def read() -> list[str]:
            async with store._backend.read() as tx:
                return [
                    call_id
                    for call_id in call_ids
                    if await tx.scalar(
                        "call_id_used", conversation_id=turn.conversation_id, call_id=call_id
                    )
                    is not None
                ]

        used = await store._backend.retrying(read, write=False)
        if used:
            raise InvalidMessage(
                f"tool call id {used[0]!r} is already used in this conversation; call ids "
                "must be unique per conversation"
            )

    def _ack(self, live: Live, committed: list[int], *, duplicate: bool = False) -> dict[str, Any]:
        return {
            "turn_id": live.turn.id,
            "events": live.events,
            "steps": live.turn.steps,
            "committed": committed,
            "open_step": open_step_json(live),
            "duplicate": duplicate,
        }


def _apply(buffer: StepBuffer, event: Any, where: str) -> None:
    try:
        if isinstance(event, schemas.TextEvent):
            buffer.text(event.text)
        elif isinstance(event, schemas.ReasoningEvent):
            buffer.reasoning(event.part)
        elif isinstance(event, schemas.ToolCallEvent):
            buffer.tool_call(
                event.id, event.name, event.arguments, provider_data=event.provider_data
            )
        else:
            buffer.tool_result(
                event.call_id, schemas.content_value(event.content), is_error=event.is_error
            )
    except InvalidMessage as exc:
        raise InvalidMessage(f"{where}: {exc}") from exc
