"""Conversations: history with stable message ids and usage sums, one message, replay for a
provider, erasure; and the health check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from ..errors import StoreUnavailable
from ..history import decode_rows
from ..messages import StoredMessage
from ..replay.request import FORMATS
from . import schemas
from .auth import Tenant, tenant
from .common import ServiceState, check_text, scoped, state, totals_view
from .problems import Problem, responses
from .routing import Route

router = APIRouter(prefix="/v1", tags=["conversations"], route_class=Route)

Caller = Annotated[Tenant, Depends(tenant)]
Service = Annotated[ServiceState, Depends(state)]
ConversationId = Annotated[str, Path(min_length=1, max_length=256)]
if TYPE_CHECKING:
    Provider = str
else:  # one of the formats, in the OpenAPI document
    Provider = Literal[tuple(sorted(FORMATS))]
READ_ERRORS = responses(401, 404, 422, 503)


def message_id(message: StoredMessage) -> str:
    """Stable: a message never moves (history is append-only), and its turn id tells it
    from a message at the same place of an erased conversation of the same id."""
    return f"m{message.position}.{message.turn_id}"


def message_view(message: StoredMessage) -> schemas.MessageView:
    return schemas.MessageView(
        id=message_id(message),
        position=message.position,
        role=message.role,
        content=message.content,
        tool_calls=[
            schemas.ToolCallView(
                id=c.id,
                name=c.name,
                arguments=dict(c.arguments),
                provider_data=None if c.provider_data is None else dict(c.provider_data),
            )
            for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id,
        tool_name=message.tool_name,
        is_error=message.is_error,
        turn_id=message.turn_id,
        step=message.step,
        created_at=message.created_at,
    )


async def _exists(service: ServiceState, cid: str) -> bool:
    store = service.store

    async def read() -> object:
        async with store._backend.read() as tx:
            return await tx.scalar("conversation_exists", conversation_id=cid)

    return await store._backend.retrying(read, write=False) is not None


def _not_found(conversation_id: str) -> Problem:
    return Problem(404, "ConversationNotFound", f"no conversation {conversation_id!r}")


@router.get(
    "/conversations/{conversation_id}/messages",
    response_model=schemas.History,
    responses=READ_ERRORS,
    summary="Committed history, with usage summed per conversation and per turn",
)
async def history(
    conversation_id: ConversationId,
    caller: Caller,
    service: Service,
    last: Annotated[
        int | None,
        Query(
            ge=0,
            le=1_000_000,
            description="The last N messages, from the start of the turn the window would cut.",
        ),
    ] = None,
) -> schemas.History:
    cid = scoped(caller, conversation_id)
    store = service.store
    messages = await store.history(cid, last=last)
    if not messages and not await _exists(service, cid):
        raise _not_found(conversation_id)
    start = messages[0].position if messages else 0
    total, by_turn = await store.conversation_usage(cid, from_position=start)
    return schemas.History(
        conversation_id=conversation_id,
        messages=[message_view(m) for m in messages],
        usage=schemas.ConversationUsage(
            conversation=totals_view(total),
            turns={turn_id: totals_view(t) for turn_id, t in by_turn.items()},
        ),
    )


@router.get(
    "/conversations/{conversation_id}/messages/{message_id}",
    response_model=schemas.MessageView,
    responses=READ_ERRORS,
    summary="One message by its id",
)
async def one_message(
    conversation_id: ConversationId,
    message_id: Annotated[str, Path(min_length=1, max_length=128)],
    caller: Caller,
    service: Service,
) -> schemas.MessageView:
    cid = scoped(caller, conversation_id)
    check_text(message_id, "the message id")
    position_text, _, turn_id = message_id[1:].partition(".")
    if not message_id.startswith("m") or not position_text.isdigit() or not turn_id:
        raise Problem(404, "MessageNotFound", f"no message {message_id!r}")
    position = int(position_text)
    store = service.store

    async def read() -> object:
        async with store._backend.read() as tx:
            return await tx.all("message_at", conversation_id=cid, position=position)

    rows = await store._backend.retrying(read, write=False)
    found = decode_rows(cid, rows)  # type: ignore[arg-type]
    if not found or found[0].turn_id != turn_id:
        raise Problem(404, "MessageNotFound", f"no message {message_id!r}")
    return message_view(found[0])


@router.get(
    "/conversations/{conversation_id}/replay",
    response_model=schemas.Replay,
    responses=READ_ERRORS,
    summary="The conversation as a request body for a provider, and the repairs made",
)
async def replay(
    conversation_id: ConversationId,
    provider: Provider,
    caller: Caller,
    service: Service,
    last: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    unanswered: Literal["synthesize", "drop"] = "synthesize",
    system: Annotated[str | None, Query(max_length=2000)] = None,
) -> schemas.Replay:
    cid = scoped(caller, conversation_id)
    if system is not None:
        check_text(system, "the system prompt")
    if not await _exists(service, cid):
        raise _not_found(conversation_id)
    body, repairs = await service.store.replay(
        cid, provider, last=last, unanswered=unanswered, system=system
    )
    return schemas.Replay(
        provider=provider,
        body=body,
        repairs=[schemas.RepairView(**r.to_dict()) for r in repairs],
    )


@router.delete(
    "/conversations/{conversation_id}",
    response_model=schemas.Erased,
    responses=responses(401, 409, 422, 503),
    summary="Erase the conversation: every row of it, in one transaction",
)
async def delete(
    conversation_id: ConversationId,
    caller: Caller,
    service: Service,
    force: bool = False,
) -> schemas.Erased:
    cid = scoped(caller, conversation_id)
    erased = await service.store.delete_conversation(cid, force=force)
    return schemas.Erased(
        conversation_id=conversation_id,
        existed=erased.existed,
        messages=erased.messages,
        turns=erased.turns,
        staged_steps=erased.staged_steps,
        session_marks=erased.session_marks,
        session_writes=erased.session_writes,
    )


health_router = APIRouter(prefix="/v1", tags=["service"], route_class=Route)


@health_router.get(
    "/health",
    response_model=schemas.Health,
    responses=responses(503),
    summary="The service and its database answer",
)
async def health(service: Service) -> schemas.Health:
    try:
        versions = await service.store._backend.applied_versions()
    except Exception as exc:
        raise StoreUnavailable(f"the database does not answer: {exc}") from exc
    return schemas.Health(status="ok", schema_version=max(versions, default=0))
