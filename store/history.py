"""Reading committed history: rows to ``StoredMessage``, and windows that never cut a step."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from .backends.base import Tx
from .messages import StoredMessage, ToolCall


def _json(value: Any) -> Any:
    """Drivers return JSON columns decoded (asyncpg) or as text (SQLite)."""
    return json.loads(value) if isinstance(value, str) else value


def as_datetime(value: Any) -> datetime | None:
    """Times are timestamptz on PostgreSQL and unix seconds on SQLite."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(float(value), tz=UTC)


def decode_rows(conversation_id: str, rows: Sequence[Row[Any]]) -> list[StoredMessage]:
    """Build messages from rows in position order. An assistant message gets its tool calls
    from the tool rows of its step, which directly follow it."""
    messages: list[StoredMessage] = []
    for i, row in enumerate(rows):
        calls: tuple[ToolCall, ...] = ()
        if row.role == "assistant" and row.tool_call_count:
            calls = tuple(
                ToolCall(
                    id=tool.tool_call_id,
                    name=tool.tool_name,
                    arguments=_json(tool.tool_arguments),
                    provider_data=_json(tool.tool_call_data),
                )
                for tool in rows[i + 1 : i + 1 + row.tool_call_count]
            )
        messages.append(
            StoredMessage(
                conversation_id=conversation_id,
                position=row.position,
                role=row.role,
                content=_json(row.content),
                turn_id=row.turn_id,
                step=row.step,
                tool_calls=calls,
                tool_call_id=row.tool_call_id,
                tool_name=row.tool_name,
                is_error=bool(row.is_error),
                created_at=as_datetime(row.created_at),
            )
        )
    return messages


async def read_history(tx: Tx, conversation_id: str, last: int | None) -> list[StoredMessage]:
    start = 0
    if last is not None:
        if last <= 0:
            return []
        # Start at the window's first message, moved back to the start of its step.
        found = await tx.scalar("window_start", conversation_id=conversation_id, last=last)
        start = found if found is not None else 0
    rows = await tx.all("history", conversation_id=conversation_id, from_position=start)
    return decode_rows(conversation_id, rows)
