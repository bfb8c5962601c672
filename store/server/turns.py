"""Turns: begin, the incremental (events) and whole-step forms, end, heartbeat, state,
long-poll wait, usage."""

from __future__ import annotations

from typing import Annotated

import anyio
import orjson
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel

from ..errors import IntegrityViolation, TurnFinished
from ..messages import INTERRUPTED, AssistantMessage, ToolCall, ToolResult, encode_step
from ..store import TurnInfo
from ..turn import TERMINAL, Turn
from ..usage import sum_records
from . import schemas
from .auth import Tenant, tenant
from .common import (
    ServiceState,
    json_response,
    owned_turn,
    owned_turn_and_usage,
    record_json,
    scoped,
    state,
    totals_json,
    turn_json,
    turn_response,
    until_disconnected,
)
from .limits import check_message
from .live import Live
from .problems import Problem, repeated, responses
from .routing import Route

router = APIRouter(prefix="/v1", tags=["turns"], route_class=Route)

Caller = Annotated[Tenant, Depends(tenant)]
Service = Annotated[ServiceState, Depends(state)]
TurnId = Annotated[str, Path(min_length=1, max_length=64)]
ConversationId = Annotated[str, Path(min_length=1, max_length=256)]
Epoch = Annotated[
    int,
    Header(
        alias="Turn-Epoch",
        ge=0,
        le=schemas.MAX_COUNT,
        description="The turn's fencing token, from the response that began it.",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=256),
]
WRITE_ERRORS = responses(401, 404, 409, 413, 422, 503)


# --- begin ------------------------------------------------------------------------------


@router.post(
    "/conversations/{conversation_id}/turns",
    status_code=201,
    response_model=schemas.TurnBegun,
    responses=repeated(schemas.TurnBegun, "A duplicate submit")
    | responses(401, 409, 413, 422, 499, 503),
    summary="Begin a turn: claim the conversation and write the user message",
)
async def begin_turn(
    request: Request,
    conversation_id: ConversationId,
    body: schemas.BeginTurn,
    caller: Caller,
    service: Service,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    cid = scoped(caller, conversation_id)
    content = schemas.content_value(body.content)
    check_message(content, "the user message", service.limits.max_message_bytes)
    timeout = service.busy_timeout if body.timeout is None else body.timeout
    timeout = min(timeout, service.max_wait)
    store = service.store

    async def begin() -> Turn:
        return await store.begin_turn(
            cid, content, idempotency_key=idempotency_key, on_busy=body.on_busy, timeout=timeout
        )

    turn = await until_disconnected(request, begin)
    if not turn.duplicate:
        service.live.add(turn)
    return json_response(
        {  # schemas.TurnBegun
            "turn_id": turn.id,
            "conversation_id": conversation_id,
            "status": turn.status,
            "duplicate": turn.duplicate,
            "epoch": None if turn.duplicate else turn.epoch,
            "lease_seconds": float(store.config.lease_seconds),
        },
        200 if turn.duplicate else 201,
    )


# --- the incremental form ---------------------------------------------------------------


@router.post(
    "/turns/{turn_id}/events",
    response_model=schemas.EventsAck,
    responses=WRITE_ERRORS,
    summary="Append events to the turn's open step (text, reasoning, tool calls, results)",
)
async def post_events(
    turn_id: TurnId, body: schemas.Events, epoch: Epoch, caller: Caller, service: Service
) -> Response:
    limit = service.limits.max_message_bytes
    for i, event in enumerate(body.events):
        if isinstance(event, schemas.TextEvent):
            check_message(event.text, f"events[{i}]", limit)
        elif isinstance(event, schemas.ReasoningEvent):
            check_message(event.part, f"events[{i}]", limit)
        elif isinstance(event, schemas.ToolCallEvent):
            check_message(event.arguments, f"events[{i}].arguments", limit)
        elif isinstance(event, schemas.ToolResultEvent):
            check_message(schemas.content_value(event.content), f"events[{i}].content", limit)
    async with service.live.hold(turn_id, caller, epoch) as live:
        ack = await service.live.apply_events(live, body.events, body.seq)
    return json_response(ack)  # schemas.EventsAck


# --- the whole-step form ----------------------------------------------------------------


def _step_of(body: schemas.StepIn, limit: int) -> tuple[AssistantMessage, list[ToolResult]]:
    content = schemas.content_value(body.content)
    check_message(content, "the assistant message", limit)
    for call in body.tool_calls:
        check_message(call.arguments, f"arguments of call {call.id!r}", limit)
    results = []
    for result in body.results:
        value = schemas.content_value(result.content)
        check_message(value, f"result of {result.call_id!r}", limit)
        results.append(ToolResult(result.call_id, value, result.is_error))
    calls = [ToolCall(c.id, c.name, c.arguments, c.provider_data) for c in body.tool_calls]
    return AssistantMessage(content, calls), results


@router.post(
    "/turns/{turn_id}/steps",
    status_code=201,
    response_model=schemas.StepAck,
    responses=repeated(schemas.StepAck, "The step was committed before") | WRITE_ERRORS,
    summary="Commit one whole step: the assistant message and one result per tool call",
)
async def post_step(
    turn_id: TurnId,
    body: schemas.StepIn,
    epoch: Epoch,
    caller: Caller,
    service: Service,
) -> Response:
    message, results = _step_of(body, service.limits.max_message_bytes)
    async with service.live.hold(turn_id, caller, epoch) as live:
        turn = live.turn
        if live.buffer is not None and (live.buffer.content or live.buffer.calls):
            raise Problem(
                409,
                "OpenStepPending",
                f"turn {turn.id} has an open step built from events: end it (an end_step "
                "event) before committing a whole step",
            )
        if body.step is not None and body.step <= turn.steps:
            if await _same_step(service, turn, body.step, message, results):
                return _step_ack(turn.id, body.step, duplicate=True)
            raise IntegrityViolation(
                f"turn {turn.id}: step {body.step} holds another write than this one; "
                "nothing was written"
            )
        if body.step is not None and body.step > turn.steps + 1:
            raise Problem(
                409,
                "StepOutOfOrder",
                f"turn {turn.id} has {turn.steps} steps: the next is {turn.steps + 1}, "
                f"not {body.step}",
                steps=turn.steps,
            )
        step = await turn.commit_step(message, results)
    return _step_ack(turn.id, step, duplicate=False)


def _step_ack(turn_id: str, step: int, *, duplicate: bool) -> Response:
    return json_response(  # schemas.StepAck
        {"turn_id": turn_id, "step": step, "duplicate": duplicate}, 200 if duplicate else 201
    )


async def _same_step(
    service: ServiceState,
    turn: Turn,
    step: int,
    message: AssistantMessage,
    results: list[ToolResult],
) -> bool:
    """Whether ``step`` of the turn, as committed, is this write (compared as JSON values)."""
    store = service.store
    encoded = encode_step(message, results, store.limits)
    history = await store.history(turn.conversation_id, last=1)  # from the turn's start
    rows = [m for m in history if m.turn_id == turn.id and m.step == step]
    if not rows or rows[0].role != "assistant":
        return False
    head, tools = rows[0], rows[1:]
    if head.content != orjson.loads(encoded.content_json) or len(tools) != len(encoded.calls):
        return False
    stored_calls = {c.id: c for c in head.tool_calls}
    for call, result, row in zip(encoded.calls, encoded.results, tools, strict=True):
        stored = stored_calls.get(call.id)
        if (
            stored is None
            or row.tool_call_id != call.id
            or stored.name != call.name
            or dict(stored.arguments) != orjson.loads(call.arguments_json)
            or row.content != orjson.loads(result.content_json)
            or row.is_error != result.is_error
        ):
            return False
    return True


# --- ending -----------------------------------------------------------------------------


async def _ended(
    service: ServiceState, caller: Caller, turn_id: str, status: str
) -> Response | None:
    """The turn's view if it has already ended with ``status`` (ending is idempotent);
    ``TurnFinished`` if it ended otherwise; None if it runs."""
    live = service.live.peek(turn_id)
    if (
        live is not None
        and live.turn.status == "running"
        and caller.owns(live.turn.conversation_id)
    ):
        return None
    info, records = await owned_turn_and_usage(service, caller, turn_id)
    if info.status == status:
        return json_response(await turn_json(service, caller, info, records))
    if info.status in TERMINAL and info.status != "expired":
        raise TurnFinished(f"turn {turn_id} has ended ({info.status}); begin a new turn")
    return None  # running (or expired: the hold says LeaseLost), queued: the hold says so


async def _commit_open_step(live: Live) -> None:
    """The open step, its unanswered calls closed as interrupted, into history."""
    buffer = live.buffer
    if buffer is not None and (buffer.content or buffer.calls):
        message, results = buffer.closed(INTERRUPTED)
        await live.turn.commit_step(message, results)
    live.buffer = None


@router.post(
    "/turns/{turn_id}/finish",
    response_model=schemas.TurnView,
    responses=WRITE_ERRORS,
    summary="Finish the turn (idempotent); the open step is committed with it",
)
async def finish(
    turn_id: TurnId,
    epoch: Epoch,
    caller: Caller,
    service: Service,
    body: Annotated[schemas.Finish | None, Body()] = None,
) -> Response:
    done = await _ended(service, caller, turn_id, "finished")
    if done is not None:
        return done
    final = body.final if body is not None else None
    final_step = _step_of(final, service.limits.max_message_bytes) if final else None
    async with service.live.hold(turn_id, caller, epoch) as live:
        turn = live.turn
        buffer = live.buffer
        if buffer is not None and (buffer.content or buffer.calls):
            if final_step is None:
                final_step = buffer.closed(INTERRUPTED)
            else:
                await _commit_open_step(live)
        live.buffer = None
        if final_step is None:
            await turn.finish()
        else:
            await turn.finish(*final_step)
    return await turn_response(service, caller, turn_id)


async def _end(
    service: ServiceState, caller: Tenant, turn_id: str, epoch: int, status: str, reason: str
) -> Response:
    done = await _ended(service, caller, turn_id, status)
    if done is not None:
        return done
    async with service.live.hold(turn_id, caller, epoch) as live:
        await _commit_open_step(live)
        if status == "failed":
            await live.turn.fail(reason or "failed")
        else:
            await live.turn.interrupt(reason or "interrupted")
    return await turn_response(service, caller, turn_id)


@router.post(
    "/turns/{turn_id}/fail",
    response_model=schemas.TurnView,
    responses=WRITE_ERRORS,
    summary="End the turn as failed (idempotent); unanswered calls closed as interrupted",
)
async def fail(
    turn_id: TurnId,
    epoch: Epoch,
    caller: Caller,
    service: Service,
    body: Annotated[schemas.EndReason | None, Body()] = None,
) -> Response:
    reason = body.reason if body is not None else ""
    return await _end(service, caller, turn_id, epoch, "failed", reason)


@router.post(
    "/turns/{turn_id}/interrupt",
    response_model=schemas.TurnView,
    responses=WRITE_ERRORS,
    summary="End the turn as interrupted (idempotent); unanswered calls closed as such",
)
async def interrupt(
    turn_id: TurnId,
    epoch: Epoch,
    caller: Caller,
    service: Service,
    body: Annotated[schemas.EndReason | None, Body()] = None,
) -> Response:
    reason = body.reason if body is not None else ""
    return await _end(service, caller, turn_id, epoch, "interrupted", reason)


@router.post(
    "/turns/{turn_id}/heartbeat",
    response_model=schemas.Heartbeat,
    responses=WRITE_ERRORS,
    summary="Renew the turn's lease (every event and step renews it too)",
)
async def heartbeat(turn_id: TurnId, epoch: Epoch, caller: Caller, service: Service) -> Response:
    async with service.live.hold(turn_id, caller, epoch) as live:
        await live.turn.heartbeat()
    return json_response(  # schemas.Heartbeat
        {"turn_id": turn_id, "lease_seconds": float(service.store.config.lease_seconds)}
    )


# --- reading ----------------------------------------------------------------------------


@router.get(
    "/turns/{turn_id}",
    response_model=schemas.TurnView,
    responses=responses(401, 404, 422, 503),
    summary="The turn's state, its open step and its usage",
)
async def get_turn(turn_id: TurnId, caller: Caller, service: Service) -> Response:
    return await turn_response(service, caller, turn_id)


@router.get(
    "/turns/{turn_id}/wait",
    response_model=schemas.TurnView,
    responses=responses(401, 404, 422, 499, 503),
    summary="Long poll: the turn's state once it has ended, or when `timeout` passes",
)
async def wait(
    request: Request,
    turn_id: TurnId,
    caller: Caller,
    service: Service,
    timeout: Annotated[float, Query(ge=0, le=3600)] = 30.0,
) -> Response:
    live = service.live.peek(turn_id)
    if (
        live is not None
        and live.turn.status == "running"
        and caller.owns(live.turn.conversation_id)
    ):
        running = True  # this service drives it: no read needed to know
    else:
        info: TurnInfo = await owned_turn(service, caller, turn_id)
        running = info.status not in TERMINAL
    if running:
        store = service.store

        async def wait_a_while() -> None:
            with anyio.move_on_after(min(timeout, service.max_wait)):
                await store.wait_for_turn(turn_id)

        await until_disconnected(request, wait_a_while)
    return await turn_response(service, caller, turn_id)


# --- usage ------------------------------------------------------------------------------


@router.post(
    "/turns/{turn_id}/usage",
    status_code=201,
    response_model=schemas.UsageRecord,
    responses=repeated(schemas.UsageRecord, "A repeated report") | WRITE_ERRORS,
    summary="Record what a model call (or the whole turn) cost: tokens and cost",
)
async def post_usage(
    turn_id: TurnId,
    body: schemas.UsageIn,
    epoch: Epoch,
    caller: Caller,
    service: Service,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    live = service.live.peek(turn_id)
    if live is None or not caller.owns(live.turn.conversation_id):
        await owned_turn(service, caller, turn_id)
    record = await service.store.record_usage(
        turn_id,
        prompt_tokens=body.prompt_tokens,
        completion_tokens=body.completion_tokens,
        cache_read_tokens=body.cache_read_tokens,
        cache_creation_tokens=body.cache_creation_tokens,
        cost_usd=None if body.cost_usd is None else repr(body.cost_usd),
        step=body.step,
        model=body.model,
        usage_id=idempotency_key,
        epoch=epoch,
    )
    return json_response(record_json(record), 200 if record.duplicate else 201)


class _TurnUsage(BaseModel):
    turn_id: str
    total: schemas.UsageTotals
    reports: list[schemas.UsageRecord]


@router.get(
    "/turns/{turn_id}/usage",
    response_model=_TurnUsage,
    responses=responses(401, 404, 422, 503),
    summary="Every usage report of the turn, and their sums",
)
async def get_usage(turn_id: TurnId, caller: Caller, service: Service) -> Response:
    _, records = await owned_turn_and_usage(service, caller, turn_id)
    return json_response(  # _TurnUsage
        {
            "turn_id": turn_id,
            "total": totals_json(sum_records(records)),
            "reports": [record_json(r) for r in records],
        }
    )


__all__ = ["router", "scoped"]
