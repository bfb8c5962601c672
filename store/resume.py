"""A running turn picked up again by id, from another ``Store`` than the one that began it,
and the step it has open (staged, not yet committed).

An HTTP service (``python -m store serve``) holds no state a restart could lose: a request
for a turn it has no handle for (it restarted, or evicted the handle) gets one from the
database with ``resume_turn``, fenced by the epoch the turn was claimed with, and rebuilds
the step in progress from the step staged for it (``read_staged_step``). It stages that
step after every event it acknowledges (``stage_step``), in the same transaction as a
lease renewal, in the shape ``StepBuffer.checkpoint`` writes, so that a turn taken over
after its lease commits it as it would a checkpointed one.

These are functions on a ``Turn`` rather than methods of it because ``store/turn.py`` is
another part's; see the module's notes in the HTTP service's report for what should move
there (``Turn.resume``, ``StepBuffer.restore``, ``StepBuffer.checkpoint(meta=...)``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .backends.fenced import refusal
from .backends.tx import Tx
from .errors import (
    ConversationBusy,
    DuplicateTurnWrite,
    InvalidMessage,
    LeaseLost,
    TurnFinished,
    TurnNotFound,
)
from .messages import INTERRUPTED, ToolCall, ToolResult, encode_step
from .turn import StepBuffer, Turn

if TYPE_CHECKING:
    from .store import Store

#: the key of a staged payload under which a caller keeps its own bookkeeping (ignored by
#: a takeover, which reads content, calls and results)
META = "meta"


async def resume_turn(store: Store, turn_id: str, *, epoch: int | None = None) -> Turn:
    """A handle on the running turn ``turn_id``, begun by any store on this database.

    ``epoch`` is the fencing token the turn was claimed with (``Turn.epoch``): given, a
    turn that runs with another one is refused (``LeaseLost``). Raises ``TurnNotFound``,
    ``LeaseLost`` (the turn was taken over), ``TurnFinished`` (it has ended) or
    ``ConversationBusy`` (it still waits for its conversation). Writes through the handle
    are fenced like the first handle's: whichever writes after a takeover is refused."""

    async def read() -> Any:
        async with store._backend.read() as tx:
            return await tx.one("resume_turn", turn_id=turn_id)

    row = await store._backend.retrying(read, write=False)
    if row is None:
        raise TurnNotFound(f"no turn {turn_id!r}")
    if epoch is not None and int(row.epoch) != epoch:
        raise LeaseLost(
            f"turn {turn_id} runs with epoch {row.epoch}, not {epoch}: this is not the "
            "handle that claimed it (or the turn was claimed again); nothing was written"
        )
    if row.status == "queued":
        raise ConversationBusy(row.conversation_id)
    if row.status == "expired":
        raise LeaseLost(
            f"turn {turn_id} lost conversation {row.conversation_id!r}: its lease expired "
            "and another turn took over; nothing was written"
        )
    if row.status != "running":
        raise TurnFinished(f"turn {turn_id} has ended ({row.status}); begin a new turn")
    turn = Turn(
        store._core,
        turn_id=turn_id,
        conversation_id=row.conversation_id,
        duplicate=False,
        epoch=int(row.epoch),
        next_position=int(row.next_position),
    )
    turn.steps = int(row.steps)
    return turn


def staged_payload(buffer: StepBuffer, meta: Mapping[str, Any] | None = None) -> str:
    """The step as ``StepBuffer.checkpoint`` stages it, with ``meta`` beside it."""
    payload: dict[str, Any] = {
        "content": buffer.content,
        "calls": [
            {
                "id": c.id,
                "name": c.name,
                "arguments": dict(c.arguments),
                "provider_data": None if c.provider_data is None else dict(c.provider_data),
            }
            for c in buffer.calls
        ],
        "results": [
            {"call_id": r.call_id, "content": r.content, "is_error": r.is_error}
            for r in buffer.results.values()
        ],
    }
    if meta is not None:
        payload[META] = dict(meta)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def buffer_from_payload(turn: Turn, payload: Any) -> tuple[StepBuffer, dict[str, Any]]:
    """The step buffer a staged payload holds, and its ``meta`` (empty if none)."""
    staged = json.loads(payload) if isinstance(payload, str | bytes) else payload
    buffer = StepBuffer(
        turn,
        content=list(staged["content"]),
        calls=[
            ToolCall(c["id"], c["name"], c["arguments"], c["provider_data"])
            for c in staged["calls"]
        ],
        results={
            r["call_id"]: ToolResult(r["call_id"], r["content"], r["is_error"])
            for r in staged["results"]
        },
    )
    return buffer, dict(staged.get(META) or {})


async def read_staged_step(store: Store, turn: Turn, step: int) -> Any:
    """The payload staged for ``step`` of ``turn`` (decoded JSON), or None."""

    async def read() -> Any:
        async with store._backend.read() as tx:
            return await tx.scalar(
                "staged_step", turn_id=turn.id, conversation_id=turn.conversation_id, step=step
            )

    payload = await store._backend.retrying(read, write=False)
    if payload is None:
        return None
    return json.loads(payload) if isinstance(payload, str | bytes) else payload


def check_stageable(store: Store, buffer: StepBuffer) -> None:
    """Refuse (``InvalidMessage``) a step that a takeover could not commit: empty, or over
    a limit as a whole. Its calls' ids are checked against the conversation by
    ``stage_step``, in its transaction."""
    if not buffer.content and not buffer.calls:
        raise InvalidMessage("an empty step cannot be staged")
    encode_step(*buffer.closed(INTERRUPTED), store.limits)


async def stage_step(
    store: Store, turn: Turn, buffer: StepBuffer, meta: Mapping[str, Any] | None = None
) -> None:
    """Stage ``buffer`` as the turn's next step (``turn.steps + 1``) and renew the lease, in
    one fenced transaction, as ``StepBuffer.checkpoint`` does, with ``meta`` kept beside it.
    Refuses first (nothing written) what a takeover could not commit: an empty step, one
    over a limit, a call id that the conversation already has (``InvalidMessage``).
    Raises ``LeaseLost``/``TurnFinished`` as a step commit would. The caller serialises
    writes on the turn (this takes no lock of the handle's)."""
    if turn.duplicate:
        raise DuplicateTurnWrite(f"turn {turn.id} is a duplicate submit: it cannot write")
    _check_running(turn)
    check_stageable(store, buffer)
    payload = staged_payload(buffer, meta)
    call_ids = [c.id for c in buffer.calls]

    async def work(tx: Tx) -> str | None:
        if not await tx.run(
            "heartbeat",
            turn_id=turn.id,
            conversation_id=turn.conversation_id,
            epoch=turn.epoch,
            lease_seconds=store.config.lease_seconds,
        ):
            return await refusal(tx, turn.id, turn.conversation_id)
        for call_id in call_ids:
            if (
                await tx.scalar(
                    "call_id_used", conversation_id=turn.conversation_id, call_id=call_id
                )
                is not None
            ):
                return f"reused:{call_id}"
        await tx.run(
            "stage_step",
            turn_id=turn.id,
            conversation_id=turn.conversation_id,
            step=turn.steps + 1,
            payload=payload,
        )
        return None

    def attempt() -> Awaitable[str | None]:
        return store._backend.transaction(turn.conversation_id, work)

    with anyio.CancelScope(shield=True):
        try:
            refused = await store._backend.retrying(attempt)
        except Exception as exc:
            raise store._backend.translate(exc) from exc
    if refused is None:
        return
    status, _, detail = refused.partition(":")
    if status == "reused":
        raise InvalidMessage(
            f"tool call id {detail!r} is already used in conversation "
            f"{turn.conversation_id!r}; call ids must be unique per conversation"
        )
    _refused(turn, status)


def _check_running(turn: Turn) -> None:
    if turn.status != "running":
        _refused(turn, turn.status)


def _refused(turn: Turn, status: str) -> None:
    if status in ("expired", "running", "missing"):
        turn.status = "expired" if status != "missing" else status
        raise LeaseLost(
            f"turn {turn.id} lost conversation {turn.conversation_id!r}: its lease expired "
            "and another turn took over; nothing was written"
        )
    turn.status = status
    raise TurnFinished(f"turn {turn.id} has ended ({status}); begin a new turn")
