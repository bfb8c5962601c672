"""Token and cost accounting: what each model call (or a whole turn) cost, per step and per
turn, summed per turn and per conversation (schema version 11, ``turnstore_usage``).

Usage is append-only: every report is a new row, numbered per turn; nothing is updated in
place. A report may carry an id of the caller's (``usage_id``): the same report again (a
retry after a lost reply) is answered with the first one, never counted twice; another
report under the same id is refused. Costs are exact: kept in billionths of a US dollar.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import anyio

from .backends.base import Backend
from .backends.tx import Tx
from .errors import DuplicateTurnWrite, InvalidMessage, LeaseLost, TurnNotFound
from .history import as_datetime
from .messages import Limits, check_identifier

if TYPE_CHECKING:
    from .store import Store
    from .turn import Turn

_MAX_COUNT = 2**63 - 1
_NANO = Decimal("0.000000001")
#: statuses of turns that never ran: nothing of theirs can have cost anything
_NEVER_RAN = frozenset({"queued", "refused"})


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Sums of usage reports. ``cost_usd`` is None when no report gave a cost."""

    reports: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One usage report as stored. ``step`` None: the report is for the turn as a whole.
    ``duplicate``: this call repeated an earlier report (same ``usage_id``), which it
    returns; nothing new was written."""

    turn_id: str
    seq: int
    step: int | None
    usage_id: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: Decimal | None
    created_at: datetime | None
    duplicate: bool = False


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessage(f"{name} must be an integer, got {value!r}")
    if not 0 <= value <= _MAX_COUNT:
        raise InvalidMessage(f"{name} must be between 0 and {_MAX_COUNT}, got {value}")
    return value


def cost_nanos(cost: object) -> int | None:
    """A cost in US dollars as an exact count of billionths (rounded half to even)."""
    if cost is None:
        return None
    if isinstance(cost, bool) or not isinstance(cost, int | float | Decimal | str):
        raise InvalidMessage(f"cost_usd must be a number, got {cost!r}")
    try:
        value = Decimal(str(cost)) if not isinstance(cost, Decimal) else cost
    except InvalidOperation:
        raise InvalidMessage(f"cost_usd must be a number, got {cost!r}") from None
    if not value.is_finite() or value < 0:
        raise InvalidMessage(f"cost_usd must be a finite number >= 0, got {cost!r}")
    nanos = int(value.quantize(_NANO) / _NANO)
    if nanos > _MAX_COUNT:
        raise InvalidMessage(f"cost_usd {cost!r} is too large")
    return nanos


def _usd(nanos: Any) -> Decimal | None:
    return None if nanos is None else (Decimal(int(nanos)) * _NANO).normalize()


def _record(turn_id: str, row: Any, *, duplicate: bool = False) -> UsageRecord:
    return UsageRecord(
        turn_id=turn_id,
        seq=int(row.seq),
        step=None if row.step is None else int(row.step),
        usage_id=row.usage_id,
        model=row.model,
        prompt_tokens=int(row.prompt_tokens),
        completion_tokens=int(row.completion_tokens),
        cache_read_tokens=int(row.cache_read_tokens),
        cache_creation_tokens=int(row.cache_creation_tokens),
        cost_usd=_usd(row.cost_nano_usd),
        created_at=as_datetime(row.created_at),
        duplicate=duplicate,
    )


def _totals(row: Any) -> UsageTotals:
    if row is None or not row.reports:
        return UsageTotals()
    return UsageTotals(
        reports=int(row.reports),
        prompt_tokens=int(row.prompt_tokens or 0),
        completion_tokens=int(row.completion_tokens or 0),
        cache_read_tokens=int(row.cache_read_tokens or 0),
        cache_creation_tokens=int(row.cache_creation_tokens or 0),
        cost_usd=_usd(row.cost_nano_usd) if row.costed else None,
    )


async def record_usage(
    backend: Backend,
    limits: Limits,
    turn: Turn | str,
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_creation_tokens: int = 0,
    cost_usd: Decimal | float | int | str | None = None,
    step: int | None = None,
    model: str | None = None,
    usage_id: str | None = None,
    epoch: int | None = None,
) -> UsageRecord:
    """Record what a model call of ``turn`` (a handle, or a turn id) cost; see
    ``Store.record_usage``."""
    values = {
        "prompt_tokens": _count(prompt_tokens, "prompt_tokens"),
        "completion_tokens": _count(completion_tokens, "completion_tokens"),
        "cache_read_tokens": _count(cache_read_tokens, "cache_read_tokens"),
        "cache_creation_tokens": _count(cache_creation_tokens, "cache_creation_tokens"),
        "cost_nano_usd": cost_nanos(cost_usd),
    }
    if step is not None and (_count(step, "step") < 1):
        raise InvalidMessage("step must be 1 or more (None: the turn as a whole)")
    limit = limits.max_id_length
    if model is not None:
        check_identifier(model, "model", limit)
    if usage_id is not None:
        check_identifier(usage_id, "usage id", limit)
    if isinstance(turn, str):
        turn_id = turn
        conversation_id = await _conversation_of(backend, turn_id)  # TurnNotFound
    else:
        if turn.duplicate:
            raise DuplicateTurnWrite(
                f"turn {turn.id} is a duplicate submit; only its first submitter records usage"
            )
        turn_id, conversation_id = turn.id, turn.conversation_id
        epoch = turn.epoch if epoch is None else epoch

    async def work(tx: Tx) -> UsageRecord | str:
        state = await tx.one(
            "turn_in_conversation", turn_id=turn_id, conversation_id=conversation_id
        )
        if state is None or state.conversation_id != conversation_id:
            return "missing"
        if usage_id is not None:
            earlier = await tx.one(
                "usage_by_id", turn_id=turn_id, conversation_id=conversation_id, usage_id=usage_id
            )
            if earlier is not None:
                record = _record(turn_id, earlier, duplicate=True)
                same = (
                    record.step == step
                    and record.model == model
                    and all(getattr(earlier, k) == v for k, v in values.items())
                )
                return record if same else "reused"
        if epoch is not None and int(state.epoch) != epoch:
            return "epoch"
        if state.status in _NEVER_RAN:
            return f"never:{state.status}"
        if step is not None and step > int(state.steps) + 1:
            return f"step:{state.steps}"
        row = await tx.one(
            "usage_insert",
            turn_id=turn_id,
            conversation_id=conversation_id,
            step=step,
            usage_id=usage_id,
            model=model,
            **values,
        )
        return UsageRecord(
            turn_id=turn_id,
            seq=int(row.seq),
            step=step,
            usage_id=usage_id,
            model=model,
            prompt_tokens=values["prompt_tokens"],  # type: ignore[arg-type]
            completion_tokens=values["completion_tokens"],  # type: ignore[arg-type]
            cache_read_tokens=values["cache_read_tokens"],  # type: ignore[arg-type]
            cache_creation_tokens=values["cache_creation_tokens"],  # type: ignore[arg-type]
            cost_usd=_usd(values["cost_nano_usd"]),
            created_at=as_datetime(row.created_at),
        )

    def attempt() -> Awaitable[UsageRecord | str]:
        return backend.transaction(conversation_id, work)

    with anyio.CancelScope(shield=True):
        try:
            outcome = await backend.retrying(attempt)
        except Exception as exc:
            raise backend.translate(exc) from exc
    if isinstance(outcome, UsageRecord):
        return outcome
    why, _, detail = outcome.partition(":")
    if why == "missing":
        raise TurnNotFound(f"no turn {turn_id!r}")
    if why == "reused":
        raise InvalidMessage(
            f"usage id {usage_id!r} was already used in turn {turn_id} for another report"
        )
    if why == "epoch":
        raise LeaseLost(
            f"turn {turn_id} was claimed with another epoch than {epoch}: this is not the "
            "handle that runs it; nothing was written"
        )
    if why == "never":
        raise InvalidMessage(f"turn {turn_id} never ran ({detail}): it has no usage")
    raise InvalidMessage(
        f"step {step} of turn {turn_id}: the turn has committed {detail} steps (its next, "
        f"open step is {int(detail) + 1})"
    )


async def _conversation_of(backend: Backend, turn_id: str) -> str:
    async def read() -> Any:
        async with backend.read() as tx:
            return await tx.one("turn_info", turn_id=turn_id)

    row = await backend.retrying(read, write=False)
    if row is None:
        raise TurnNotFound(f"no turn {turn_id!r}")
    return str(row.conversation_id)


async def usage_of_turn(store: Store, turn_id: str) -> list[UsageRecord]:
    """Every usage report of a turn, in the order recorded."""

    async def read() -> Sequence[Any]:
        async with store._backend.read() as tx:
            return await tx.all("usage_of_turn", turn_id=turn_id)

    rows = await store._backend.retrying(read, write=False)
    return [_record(turn_id, row) for row in rows]


def sum_records(records: Sequence[UsageRecord]) -> UsageTotals:
    costs = [r.cost_usd for r in records if r.cost_usd is not None]
    return UsageTotals(
        reports=len(records),
        prompt_tokens=sum(r.prompt_tokens for r in records),
        completion_tokens=sum(r.completion_tokens for r in records),
        cache_read_tokens=sum(r.cache_read_tokens for r in records),
        cache_creation_tokens=sum(r.cache_creation_tokens for r in records),
        cost_usd=sum(costs, Decimal(0)).normalize() if costs else None,
    )


async def conversation_usage(
    store: Store, conversation_id: str, *, from_position: int = 0
) -> tuple[UsageTotals, dict[str, UsageTotals]]:
    """A conversation's usage: its sums over every turn, and the sums of each turn whose
    user message is at ``from_position`` or later (a history window's turns), by turn id."""

    async def read() -> tuple[Any, Sequence[Any]]:
        async with store._backend.read() as tx:
            total = await tx.one("usage_total", conversation_id=conversation_id)
            by_turn = await tx.all(
                "usage_by_turn", conversation_id=conversation_id, from_position=from_position
            )
            return total, by_turn

    total, by_turn = await store._backend.retrying(read, write=False)
    return _totals(total), {row.turn_id: _totals(row) for row in by_turn}
