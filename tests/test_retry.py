"""A write whose connection broke is retried once; a retry must recognise an attempt that
did commit (its answer was lost with the connection) instead of doing the work twice."""

from __future__ import annotations

import hashlib

from store import Store, hooks
from store.backends.records import ClaimRequest
from store.claim import Claimed, _own_landed_attempt

from .conftest import Target
from .helpers import count_rows


def _request(store: Store, turn_id: str, *, retry: bool) -> ClaimRequest:
    content = '[{"type":"text","text":"go"}]'
    return ClaimRequest(
        lock_key=hooks.backend(store).lock_key("c"),
        conversation_id="c",
        turn_id=turn_id,
        idempotency_key=None,
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
        content_json=content,
        owner=hooks.owner(store),
        lease_seconds=30,
        window_seconds=0,
        fail_when_busy=True,
        first=True,
        retry=retry,
    )


async def test_a_landed_claim_is_recognised_on_retry(store: Store, target: Target) -> None:
    turn = await store.begin_turn("c", "go")
    before = await count_rows(store)
    if target.kind == "postgres":  # the one-round-trip path
        row = await hooks.backend(store).claim_fast(_request(store, turn.id, retry=True))
        assert row is not None
        landed = Claimed(row.turn_id, row.epoch, row.next_position or 0)
        assert row.decision == "claimed"
    else:  # the general path
        landed = await hooks.backend(store).transaction(
            "c", lambda tx: _own_landed_attempt(tx, turn.id, "c")
        )
    assert landed == Claimed(turn.id, turn.epoch, 1)
    assert await count_rows(store) == before  # nothing written twice


async def test_a_retry_of_a_claim_that_did_not_land_claims(store: Store, target: Target) -> None:
    if target.kind == "postgres":
        row = await hooks.backend(store).claim_fast(_request(store, "turn_fresh", retry=True))
        assert row is not None and row.decision == "claimed" and row.turn_id == "turn_fresh"
    else:
        assert (
            await hooks.backend(store).transaction(
                "c", lambda tx: _own_landed_attempt(tx, "turn_fresh", "c")
            )
            is None
        )
