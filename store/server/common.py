"""What the routes share: the service's state, id scoping, views of library values, and
running a wait that ends when the client goes away."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import anyio
from fastapi import Request

from .. import usage as usage_lib
from ..store import Store, TurnInfo
from ..turn import TERMINAL
from . import schemas
from .auth import Authenticator, Tenant
from .limits import Limits
from .live import LiveTurns, open_step_view
from .problems import Problem

T = TypeVar("T")
MAX_STORED_ID = 256  # the schema's limit on a conversation id


@dataclass
class ServiceState:
    store: Store
    live: LiveTurns
    auth: Authenticator
    limits: Limits
    busy_timeout: float
    max_wait: float


def state(request: Request) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


def check_text(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Problem(422, "InvalidRequest", f"{what} is not valid Unicode") from None
    if "\x00" in value:
        raise Problem(422, "InvalidRequest", f"{what} may not contain NUL characters")
    return value


def scoped(tenant: Tenant, conversation_id: str) -> str:
    """The store's id of the caller's conversation (422 if it cannot be one)."""
    check_text(conversation_id, "the conversation id")
    stored = tenant.scoped(conversation_id)
    if len(stored) > MAX_STORED_ID:
        raise Problem(
            422,
            "InvalidRequest",
            f"the conversation id is {len(conversation_id)} characters; the limit is "
            f"{MAX_STORED_ID - len(tenant.prefix)}",
        )
    return stored


def totals_view(totals: usage_lib.UsageTotals) -> schemas.UsageTotals:
    return schemas.UsageTotals(
        reports=totals.reports,
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        cache_read_tokens=totals.cache_read_tokens,
        cache_creation_tokens=totals.cache_creation_tokens,
        cost_usd=_float(totals.cost_usd),
    )


def record_view(record: usage_lib.UsageRecord) -> schemas.UsageRecord:
    return schemas.UsageRecord(
        turn_id=record.turn_id,
        seq=record.seq,
        step=record.step,
        usage_id=record.usage_id,
        model=record.model,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cache_read_tokens=record.cache_read_tokens,
        cache_creation_tokens=record.cache_creation_tokens,
        cost_usd=_float(record.cost_usd),
        created_at=record.created_at,
        duplicate=record.duplicate,
    )


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


async def owned_turn(service: ServiceState, tenant: Tenant, turn_id: str) -> TurnInfo:
    """The turn's state, if it is a turn of the caller's tenant (else ``TurnNotFound``)."""
    from ..errors import TurnNotFound

    check_text(turn_id, "the turn id")
    info = await service.store.turn_status(turn_id)
    if not tenant.owns(info.conversation_id):
        raise TurnNotFound(f"no turn {turn_id!r}")
    return info


async def turn_view(service: ServiceState, tenant: Tenant, info: TurnInfo) -> schemas.TurnView:
    store = service.store
    records = await store.turn_usage(info.id)
    live = service.live.peek(info.id)
    open_step = None
    if live is not None and live.turn.status == "running":
        open_step = open_step_view(live)
    elif info.status == "running":
        open_step = await _staged_view(store, info)
    return schemas.TurnView(
        turn_id=info.id,
        conversation_id=tenant.unscoped(info.conversation_id),
        status=info.status,
        steps=info.steps,
        error=info.error,
        idempotency_key=info.idempotency_key,
        created_at=info.created_at,
        started_at=info.started_at,
        ended_at=info.ended_at,
        ended=info.status in TERMINAL,
        open_step=open_step,
        usage=totals_view(usage_lib.sum_records(records)),
    )


async def _staged_view(store: Store, info: TurnInfo) -> schemas.OpenStep | None:
    import json

    async def read() -> Any:
        async with store.backend.read() as tx:
            return await tx.scalar("staged_step", turn_id=info.id, step=info.steps + 1)

    payload = await store.backend.retrying(read, write=False)
    if payload is None:
        return None
    staged = json.loads(payload) if isinstance(payload, str | bytes) else payload
    answered = {r["call_id"] for r in staged["results"]}
    calls = [c["id"] for c in staged["calls"]]
    return schemas.OpenStep(
        step=info.steps + 1,
        calls=calls,
        unanswered=[c for c in calls if c not in answered],
        parts=len(staged["content"]),
    )


async def until_disconnected(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()``, cancelled if the client disconnects meanwhile (a submit waiting in
    line leaves it; a long poll stops)."""
    done: list[T] = []
    failed: list[Exception] = []

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return
                if not message.get("more_body", False):
                    await anyio.sleep(0.05)  # never spin on a server that answers at once

        async def run() -> None:
            try:
                done.append(await work())
            except Exception as exc:  # raised below, not as an exception group
                failed.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(run)
    if failed:
        raise failed[0]
    if not done:
        raise Problem(499, "ClientClosedRequest", "the client went away")
    return done[0]
