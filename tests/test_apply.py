"""turnstore_apply on PostgreSQL: the user messages of a batch's claims are written by one
statement after the claims (schema/postgres/0006_cheaper_claims.sql), and the fences of
its steps and its ends by one statement each (0008_batched_fences.sql), with the same
rows and answers as writes applied one by one."""

from __future__ import annotations

import asyncpg

from store.backends.postgres import as_record, server_settings
from store.backends.records import ClaimRequest, StepWrite, TurnEnd

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


def _step(conversation: str, turn_id: str, epoch: int, step: int, position: int) -> StepWrite:
    return StepWrite(
        lock_key=hash(conversation), conversation_id=conversation, turn_id=turn_id,
        epoch=epoch, lease_seconds=30, step=step, position=position,
        content_json=f'[{{"type":"text","text":"{turn_id} {step}"}}]',
        call_ids=[f"{turn_id}_{step}"], tool_names=["t"], arguments_json=["{}"],
        call_data_json=[None], results_json=['[{"type":"text","text":"ok"}]'],
        is_error=[False],
    )  # fmt: skip


def _end(write: StepWrite | None, conversation: str, turn_id: str, epoch: int) -> TurnEnd:
    return TurnEnd(
        lock_key=hash(conversation), conversation_id=conversation, turn_id=turn_id,
        epoch=epoch, status="finished", error=None, final=write, lease_seconds=30,
    )  # fmt: skip


async def test_a_batch_fences_every_step_and_ends_every_turn_as_one_by_one(
    pg_target: Target,
) -> None:
    store = await pg_target.open()
    await store.close()
    conn = await asyncpg.connect(
        asyncpg_dsn(pg_target.url), server_settings=server_settings(pg_target.schema)
    )
    try:
        turns = {c: f"t{c}" for c in "abcdef"}
        claimed = await conn.fetch(APPLY, [as_record(_claim(c, t)) for c, t in turns.items()])
        epoch = {row["turn_id"]: row["epoch"] for row in claimed}
        assert {row["outcome"] for row in claimed} == {"claimed"}
        batch = [
            _step("a", "ta", epoch["ta"], 1, 1),  # written
            _step("b", "tb", epoch["tb"] + 1, 1, 1),  # a stale fencing token: refused
            _end(_step("c", "tc", epoch["tc"], 1, 1), "c", "tc", epoch["tc"]),  # both
            _end(None, "d", "td", epoch["td"]),  # ends without a step
            _end(_step("e", "te", epoch["te"], 2, 1), "e", "te", epoch["te"]),  # step 1 missing
            _end(None, "f", "tf", epoch["tf"] - 1),  # a stale fencing token: refused
        ]
        rows = await conn.fetch(APPLY, [as_record(w) for w in batch])
        assert {row["ord"]: row["outcome"] for row in rows} == {
            1: None,
            2: "running:0",
            3: None,
            4: None,
            5: "running:0",  # neither its step nor its end
            6: "running:0",
        }
        status = dict(await conn.fetch("SELECT id, status || ':' || steps FROM turnstore_turns"))
        assert status == {
            "ta": "running:1",
            "tb": "running:0",
            "tc": "finished:1",
            "td": "finished:0",
            "te": "running:0",
            "tf": "running:0",
        }
        messages = await conn.fetch(
            "SELECT conversation_id, count(*) FROM turnstore_messages GROUP BY 1 ORDER BY 1"
        )
        assert [tuple(m) for m in messages] == [
            ("a", 3), ("b", 1), ("c", 3), ("d", 1), ("e", 1), ("f", 1),
        ]  # fmt: skip
    finally:
        await conn.close()


async def test_two_steps_of_one_turn_in_one_batch_apply_the_first_only(pg_target: Target) -> None:
    # The store never sends this (a turn's writes go one after the other); a caller that
    # does gets the first step written and the second refused, never a mix of the two.
    store = await pg_target.open()
    await store.close()
    conn = await asyncpg.connect(
        asyncpg_dsn(pg_target.url), server_settings=server_settings(pg_target.schema)
    )
    try:
        (claimed,) = await conn.fetch(APPLY, [as_record(_claim("a", "ta"))])
        epoch = claimed["epoch"]
        batch = [_step("a", "ta", epoch, 1, 1), _step("a", "ta", epoch, 2, 3), _claim("b", "tb")]
        rows = await conn.fetch(APPLY, [as_record(w) for w in batch])
        assert {row["ord"]: row["outcome"] for row in rows} == {
            1: None, 2: "running:1", 3: "claimed",
        }  # fmt: skip
        steps = await conn.fetch(
            "SELECT step, count(*) FROM turnstore_messages WHERE conversation_id = 'a'"
            " GROUP BY step ORDER BY step"
        )
        assert [tuple(r) for r in steps] == [(0, 1), (1, 2)]
    finally:
        await conn.close()
