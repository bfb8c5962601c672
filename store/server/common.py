"""What the routes share: the service's state, id scoping, views of library values, and
running a wait that ends when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import Request, Response
from sqlalchemy import text

from .. import usage as usage_lib
from ..backends.tx import EngineTx
from ..errors import TurnNotFound
from ..history import as_datetime
from ..store import Store, TurnInfo
from ..turn import TERMINAL
from . import schemas
from .auth import Authenticator, Tenant
from .limits import Limits
from .live import LiveTurns, open_step_json
from .problems import Problem

T = TypeVar("T")
MAX_STORED_ID = 256  # the schema's limit on a conversation id


#: turn views read at once: each is one quick statement, and each in flight holds a
#: connection of the store's pool (32 in the benchmark): unbounded, the views that follow
#: ends opened ~25 connections where the writes use ~8, each a server process to start
VIEW_READS = 4


@dataclass
class ServiceState:
    store: Store
    live: LiveTurns
    auth: Authenticator
    limits: Limits
    busy_timeout: float
    max_wait: float
    view_reads: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(VIEW_READS))


async def state(request: Request) -> ServiceState:
    """The FastAPI dependency (async: a plain function would run in a worker thread)."""
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


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON answer built with orjson, for the hot routes: the route still declares its
    response model (the OpenAPI document is unchanged), and the views below build exactly
    that model's JSON (datetimes as pydantic writes them, UTC as ``Z``), without the
    validation and serialization FastAPI would run again on a model the service made."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        media_type="application/json",
    )


def totals_json(totals: usage_lib.UsageTotals) -> dict[str, Any]:
    """``schemas.UsageTotals`` as JSON values."""
    return {
        "reports": totals.reports,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cache_read_tokens": totals.cache_read_tokens,
        "cache_creation_tokens": totals.cache_creation_tokens,
        "cost_usd": _float(totals.cost_usd),
    }


def record_json(record: usage_lib.UsageRecord) -> dict[str, Any]:
    """``schemas.UsageRecord`` as JSON values."""
    return {
        "turn_id": record.turn_id,
        "seq": record.seq,
        "step": record.step,
        "usage_id": record.usage_id,
        "model": record.model,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "cache_creation_tokens": record.cache_creation_tokens,
        "cost_usd": _float(record.cost_usd),
        "created_at": record.created_at,
        "duplicate": record.duplicate,
    }


def totals_view(totals: usage_lib.UsageTotals) -> schemas.UsageTotals:
    return schemas.UsageTotals(**totals_json(totals))


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


async def owned_turn(service: ServiceState, tenant: Tenant, turn_id: str) -> TurnInfo:
    """The turn's state, if it is a turn of the caller's tenant (else ``TurnNotFound``)."""
    check_text(turn_id, "the turn id")
    info = await service.store.turn_status(turn_id)
    if not tenant.owns(info.conversation_id):
        raise TurnNotFound(f"no turn {turn_id!r}")
    return info


#: A turn's state and its usage reports in one statement (one round trip; a view follows
#: every end of a turn): the ``turn_info`` and ``usage_of_turn`` queries joined, the same
#: SQL on both databases. No row: no such turn; a row without ``seq``: no report.
_TURN_AND_USAGE = (
    "SELECT t.id, t.conversation_id, t.idempotency_key, t.status, t.steps, t.error,"
    " t.created_at, t.started_at, t.ended_at, u.seq, u.step, u.usage_id, u.model,"
    " u.prompt_tokens, u.completion_tokens, u.cache_read_tokens, u.cache_creation_tokens,"
    " u.cost_nano_usd, u.created_at AS usage_created_at"
    " FROM turnstore_turns t LEFT JOIN turnstore_usage u ON u.turn_id = t.id"
    " WHERE t.id = {turn_id} ORDER BY u.seq"
)
_TURN_AND_USAGE_ENGINE = text(_TURN_AND_USAGE.format(turn_id=":turn_id"))
_TURN_AND_USAGE_ASYNCPG = _TURN_AND_USAGE.format(turn_id="$1")


async def _turn_and_usage_rows(service: ServiceState, turn_id: str) -> Sequence[Mapping[Any, Any]]:
    backend = service.store._backend
    hot_call = getattr(backend, "_call", None) if backend.dialect == "postgres" else None

    async def read() -> Sequence[Mapping[Any, Any]]:
        if hot_call is not None:
            # PostgreSQL: on asyncpg's pool, as the backend's hot calls are (a checkout
            # costs a fraction of SQLAlchemy's, and the pool keeps its connections)
            async with service.view_reads:
                return await hot_call("fetch", _TURN_AND_USAGE_ASYNCPG, turn_id)  # type: ignore[no-any-return]
        async with backend.read() as tx:
            assert isinstance(tx, EngineTx)
            result = await tx.conn.execute(_TURN_AND_USAGE_ENGINE, {"turn_id": turn_id})
            return [row._mapping for row in result]

    return await backend.retrying(read, write=False)


async def owned_turn_and_usage(
    service: ServiceState, tenant: Tenant, turn_id: str
) -> tuple[TurnInfo, list[usage_lib.UsageRecord]]:
    """``owned_turn`` and the turn's usage reports (``Store.turn_usage``), in one
    statement."""
    check_text(turn_id, "the turn id")
    rows = await _turn_and_usage_rows(service, turn_id)
    if not rows or not tenant.owns(rows[0]["conversation_id"]):
        raise TurnNotFound(f"no turn {turn_id!r}")
    first = rows[0]
    info = TurnInfo(
        id=first["id"],
        conversation_id=first["conversation_id"],
        idempotency_key=first["idempotency_key"],
        status=first["status"],
        steps=first["steps"],
        error=first["error"],
        created_at=as_datetime(first["created_at"]),
        started_at=as_datetime(first["started_at"]),
        ended_at=as_datetime(first["ended_at"]),
    )
    records = [
        usage_lib.UsageRecord(
            turn_id=turn_id,
            seq=int(row["seq"]),
            step=None if row["step"] is None else int(row["step"]),
            usage_id=row["usage_id"],
            model=row["model"],
            prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]),
            cache_read_tokens=int(row["cache_read_tokens"]),
            cache_creation_tokens=int(row["cache_creation_tokens"]),
            cost_usd=usage_lib._usd(row["cost_nano_usd"]),
            created_at=as_datetime(row["usage_created_at"]),
        )
        for row in rows
        if row["seq"] is not None
    ]
    return info, records


async def turn_json(
    service: ServiceState,
    tenant: Tenant,
    info: TurnInfo,
    records: Sequence[usage_lib.UsageRecord],
) -> dict[str, Any]:
    """``schemas.TurnView`` as JSON values: the turn's state, its open step (this service's
    handle's, or the one staged in the database) and its usage."""
    live = service.live.peek(info.id)
    open_step: dict[str, Any] | None = None
    if live is not None and live.turn.status == "running":
        open_step = open_step_json(live)
    elif info.status == "running":
        open_step = await _staged_json(service.store, info)
    return {
        "turn_id": info.id,
        "conversation_id": tenant.unscoped(info.conversation_id),
        "status": info.status,
        "steps": info.steps,
        "error": info.error,
        "idempotency_key": info.idempotency_key,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "ended_at": info.ended_at,
        "ended": info.status in TERMINAL,
        "open_step": open_step,
        "usage": totals_json(usage_lib.sum_records(records)),
    }


async def turn_response(service: ServiceState, tenant: Tenant, turn_id: str) -> Response:
    """The turn's view (``schemas.TurnView``), as it is in the database now."""
    info, records = await owned_turn_and_usage(service, tenant, turn_id)
    return json_response(await turn_json(service, tenant, info, records))


async def _staged_json(store: Store, info: TurnInfo) -> dict[str, Any] | None:
    async def read() -> Any:
        async with store._backend.read() as tx:
            return await tx.scalar(
                "staged_step",
                turn_id=info.id,
                conversation_id=info.conversation_id,
                step=info.steps + 1,
            )

    payload = await store._backend.retrying(read, write=False)
    if payload is None:
        return None
    staged = orjson.loads(payload) if isinstance(payload, str | bytes) else payload
    answered = {r["call_id"] for r in staged["results"]}
    calls = [c["id"] for c in staged["calls"]]
    return {
        "step": info.steps + 1,
        "calls": calls,
        "unanswered": [c for c in calls if c not in answered],
        "parts": len(staged["content"]),
    }


async def until_disconnected(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()``, cancelled if the client disconnects meanwhile (a submit waiting in
    line leaves it; a long poll stops). The work runs in this task, its exceptions as they
    are; one watcher task waits for the disconnect (no task group: this wraps every begin)."""
    with anyio.CancelScope() as scope:
        watcher = asyncio.get_running_loop().create_task(_watch(request, scope))
        try:
            return await work()
        finally:
            watcher.cancel()
    raise Problem(499, "ClientClosedRequest", "the client went away")


async def _watch(request: Request, scope: anyio.CancelScope) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
        if not message.get("more_body", False):
            await asyncio.sleep(0.05)  # never spin on a server that answers at once
