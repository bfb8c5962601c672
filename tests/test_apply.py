"""turnstore_apply on PostgreSQL: the user messages of a batch's claims are written by one
statement after the claims (schema/postgres/0006_cheaper_claims.sql), with the same
rows and answers as claims applied one by one."""

from __future__ import annotations

import asyncpg

from store.backends.base import ClaimRequest
from store.backends.postgres import as_record, server_settings

from .conftest import Target, asyncpg_dsn

APPLY = "SELECT * FROM turnstore_apply($1::turnstore_write[])"


def _claim(conversation: str, turn_id: str, *, retry: bool = False) -> ClaimRequest:
    return ClaimRequest(
        lock_key=hash(conversation), conversation_id=conversation, turn_id=turn_id,
        idempotency_key=f"key-{turn_id}", content_hash=f"hash-{turn_id}",
        content_json=f'[{{"type":"text","text":"{turn_id}"}}]', owner="test",
        lease_seconds=30, window_seconds=10, fail_when_busy=False, first=not retry,
        retry=retry,
    )  # fmt: skip


async def test_claims_in_one_batch_write_their_user_messages_together(pg_target: Target) -> None:
    store = await pg_target.open()
    await store.close()
    conn = await asyncpg.connect(
        asyncpg_dsn(pg_target.url), server_settings=server_settings(pg_target.schema)
    )
    try:
        batch = [
            _claim("a", "ta"),
            _claim("b", "tb"),
            _claim("a", "ta2"),  # a is taken by ta in this very batch: queued
            _claim("a", "ta", retry=True),  # reads a's next position: ta's message first
            _claim("c", "tc"),
        ]
        rows = await conn.fetch(APPLY, [as_record(w) for w in batch])
        answers = {row["ord"]: (row["outcome"], row["turn_id"], row["next_position"])
                   for row in rows}  # fmt: skip
        assert answers == {
            1: ("claimed", "ta", 1),
            2: ("claimed", "tb", 1),
            3: ("queued", "ta2", None),
            4: ("claimed", "ta", 1),  # ta's user message was written before it looked
            5: ("claimed", "tc", 1),
        }
        messages = await conn.fetch(
            "SELECT conversation_id, position, role, turn_id, content::text"
            "  FROM turnstore_messages ORDER BY conversation_id, position"
        )
        assert [tuple(m) for m in messages] == [
            ("a", 0, "user", "ta", '[{"text": "ta", "type": "text"}]'),
            ("b", 0, "user", "tb", '[{"text": "tb", "type": "text"}]'),
            ("c", 0, "user", "tc", '[{"text": "tc", "type": "text"}]'),
        ]
    finally:
        await conn.close()
