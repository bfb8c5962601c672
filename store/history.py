"""Reading committed history: rows to ``StoredMessage``, and windows that never cut a step."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .backends.base import Backend, Tx
from .messages import StoredMessage, StoredToolCall, ToolCall


def _json(value: Any) -> Any:
    """Drivers return JSON columns decoded (asyncpg) or as text (SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


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
    messages: list[StoredMessage] = []
    loads = json.loads
    for i, row in enumerate(rows):
        (position, role, turn_id, step, calls_count, content, call_id, tool_name, _, _,
         is_error, created_at) = row  # fmt: skip
        calls: tuple[ToolCall, ...] = ()
        if calls_count and role == "assistant":
            calls = tuple(
                StoredToolCall(tool[6], tool[7], _json(tool[8]), _json(tool[9]), _text(tool[8]))
                for tool in rows[i + 1 : i + 1 + calls_count]
            )
        messages.append(
            StoredMessage(
                conversation_id,
                position,
                role,
                loads(content) if isinstance(content, str) else content,
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
    """Where a window of about the last N messages starts: the N-th last message, moved
    back to the start of its step."""
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
