"""Reading committed history: rows to ``StoredMessage``, and windows that never cut a step."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .backends.base import Backend
from .backends.tx import Tx
from .messages import StoredMessage, StoredToolCall, ToolCall


def decode_json(values: Sequence[Any]) -> list[Any]:
    """A JSON column of rows, decoded: the texts in one ``json.loads`` of them all, since one
    call per row costs about as much again as the parsing itself. None and values the
    driver already decoded are kept. The schema makes each text one JSON value; should the
    joined text still not parse into as many values, each is decoded alone, so that a bad
    one fails as it would on its own."""
    texts = [v for v in values if isinstance(v, str)]
    try:
        decoded = json.loads(f"[{','.join(texts)}]")
    except ValueError:
        decoded = None
    if decoded is None or len(decoded) != len(texts):
        decoded = [json.loads(t) for t in texts]
    if len(texts) == len(values):
        return decoded  # type: ignore[no-any-return]
    found = iter(decoded)
    return [next(found) if isinstance(v, str) else v for v in values]


def _text(value: Any) -> str | None:
    """The JSON text of a column when the driver returned text (else None)."""
    return value if isinstance(value, str) else None


def as_datetime(value: Any) -> datetime | None:
    """Times are timestamptz on PostgreSQL and unix seconds on SQLite."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), tz=UTC)


def decode_rows(conversation_id: str, rows: Sequence[Sequence[Any]]) -> list[StoredMessage]:
    """Build messages from rows (the ``history`` query's columns, in position order). An
    assistant message gets its tool calls from the tool rows of its step, which directly
    follow it."""
    contents = decode_json([row[5] for row in rows])
    arguments = decode_json([row[8] for row in rows])
    call_data = decode_json([row[9] for row in rows])
    messages: list[StoredMessage] = []
    for i, row in enumerate(rows):
        (position, role, turn_id, step, calls_count, _, call_id, tool_name, _, _,
         is_error, created_at) = row  # fmt: skip
        calls: tuple[ToolCall, ...] = ()
        if calls_count and role == "assistant":
            calls = tuple(
                StoredToolCall(
                    rows[j][6], rows[j][7], arguments[j], call_data[j], _text(rows[j][8])
                )
                for j in range(i + 1, min(i + 1 + calls_count, len(rows)))
            )
        messages.append(
            StoredMessage(
                conversation_id,
                position,
                role,
                contents[i],
                turn_id,
                step,
                calls,
                call_id,
                tool_name,
                bool(is_error),
                as_datetime(created_at),
            )
        )
    return messages


async def window_start(tx: Tx, conversation_id: str, last: int | None) -> int:
    """Where a window of the last N messages starts: the N-th last message, moved back to
    the user message that opens its turn."""
    if last is None:
        return 0
    found = await tx.scalar("window_start", conversation_id=conversation_id, last=last)
    return found if found is not None else 0


async def read_history(
    backend: Backend, conversation_id: str, last: int | None
) -> list[StoredMessage]:
    if last is not None and last <= 0:
        return []
    return decode_rows(conversation_id, await backend.history_rows(conversation_id, last))


async def read_replay_rows(
    backend: Backend, conversation_id: str, last: int | None
) -> Sequence[Sequence[Any]]:
    """The rows ``store.replay.fast`` formats: those ``read_history`` reads, fewer columns."""
    if last is not None and last <= 0:
        return []
    return await backend.replay_rows(conversation_id, last)
