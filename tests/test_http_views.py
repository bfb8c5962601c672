"""The service's hot answers are built as JSON values and written with orjson, not through
their pydantic response models: each must be, byte for byte, what the model it declares in
the OpenAPI document would have written (datetimes, floats, nulls, key order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from store.server import schemas
from store.server.auth import Tenant
from store.server.common import json_response, record_json, totals_json, turn_json
from store.store import TurnInfo
from store.usage import UsageRecord, UsageTotals

WHEN = [
    None,
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(0))),
]
COSTS = [None, Decimal("0"), Decimal("0.0061"), Decimal("0.000000001"), Decimal("123456.5")]


def same_as_model(model: type[schemas.BaseModel], value: dict[str, Any]) -> None:
    written = json_response(value).body
    assert written == model.model_validate(value).model_dump_json().encode()
    read_back = model.model_validate_json(written)
    assert read_back.model_dump() == model.model_validate(value).model_dump()


@pytest.mark.parametrize("cost", COSTS)
def test_usage_totals(cost: Decimal | None) -> None:
    same_as_model(schemas.UsageTotals, totals_json(UsageTotals(3, 1834, 96, 1024, 0, cost)))
    same_as_model(schemas.UsageTotals, totals_json(UsageTotals()))


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("cost", COSTS)
def test_usage_record(when: datetime | None, cost: Decimal | None) -> None:
    for step, key, model in ((None, None, None), (2, "usage-1", "gpt-x")):
        record = UsageRecord("turn_1", 1, step, key, model, 10, 2, 0, 5, cost, when)
        same_as_model(schemas.UsageRecord, record_json(record))


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("status", ["finished", "failed", "interrupted", "queued", "expired"])
async def test_turn_view(when: datetime | None, status: str) -> None:
    service: Any = SimpleNamespace(live=SimpleNamespace(peek=lambda turn_id: None))
    info = TurnInfo(
        id="turn_1",
        conversation_id="acme/conv-1",
        idempotency_key=None if when is None else "req-42",
        status=status,
        steps=2,
        error="boom" if status == "failed" else None,
        created_at=when,
        started_at=when,
        ended_at=None if status == "queued" else when,
    )
    records = [UsageRecord("turn_1", n, None, None, None, 1, 2, 3, 4, c, when)
               for n, c in enumerate(COSTS, start=1)]  # fmt: skip
    for usage in ([], records):
        view = await turn_json(service, Tenant("acme"), info, usage)
        assert view["conversation_id"] == "conv-1"
        same_as_model(schemas.TurnView, view)


def test_open_step_and_acks() -> None:
    open_step = {"step": 3, "calls": ["a", "b"], "unanswered": ["b"], "parts": 2}
    same_as_model(schemas.OpenStep, open_step)
    for step in (None, open_step):
        for events in (None, 0, 7):
            ack = {"turn_id": "turn_1", "events": events, "steps": 2, "committed": [1, 2],
                   "open_step": step, "duplicate": False}  # fmt: skip
            same_as_model(schemas.EventsAck, ack)
    for epoch in (None, 3):
        begun = {"turn_id": "turn_1", "conversation_id": "conv-1", "status": "running",
                 "duplicate": epoch is None, "epoch": epoch, "lease_seconds": 30.0}  # fmt: skip
        same_as_model(schemas.TurnBegun, begun)
    same_as_model(schemas.StepAck, {"turn_id": "turn_1", "step": 2, "duplicate": True})
    same_as_model(schemas.Heartbeat, {"turn_id": "turn_1", "lease_seconds": 0.5})
