"""Readers for the checker: each opens its own connection (not the system's pool) and turns
one table layout into ``CheckRow``s."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from .adapters.instatic_rows import text_of
from .checker import CheckRow
from .dbtarget import check_schema_name

_AI_MESSAGES_SQL = (
    "SELECT conversation_id, position, role, tool_call_id,"
    " CASE WHEN role = 'tool' THEN NULL ELSE content_json{cast} END"
    " FROM ai_messages ORDER BY conversation_id, position"
)


def _ai_message(row: Iterable[Any]) -> CheckRow:
    conv, pos, role, call_id, content = row
    if role == "tool":
        return CheckRow(conv, pos, "tool", result_for=call_id)
    text = text_of(content)
    if role == "assistant":
        return CheckRow(conv, pos, "assistant", text, (call_id,) if call_id else ())
    return CheckRow(conv, pos, "user", text)


async def read_ai_messages_pg(dsn: str, schema: str) -> list[CheckRow]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": check_schema_name(schema)})
    try:
        rows = await conn.fetch(_AI_MESSAGES_SQL.format(cast="::text"))
    finally:
        await conn.close()
    return [_ai_message(r) for r in rows]


async def read_ai_messages_sqlite(path: Path) -> list[CheckRow]:
    def read() -> list[CheckRow]:
        with closing(sqlite3.connect(path)) as conn:
            return [_ai_message(r) for r in conn.execute(_AI_MESSAGES_SQL.format(cast=""))]

    return await anyio.to_thread.run_sync(read)


# --- the OpenAI Agents SDK's items (Responses-item JSON in agent_messages.message_data) -----

_AGENT_ITEMS_SQL = (
    "SELECT session_id, message_data FROM {table} ORDER BY session_id, created_at, id"
)


def _agent_items(rows: Iterable[tuple[str, str]]) -> list[CheckRow]:
    """Order as ``SQLAlchemySession.get_items`` returns them (created_at, id); the position
    is the ordinal. A ``message`` and the ``function_call``s after it form one assistant
    block, as the Responses API and the chat converters group them."""
    out: list[CheckRow] = []
    prev = None
    pos = 0
    for session_id, data in rows:
        pos = pos + 1 if session_id == prev else 1
        prev = session_id
        item = json.loads(data)
        kind = item.get("type")
        if kind == "function_call":
            out.append(CheckRow(session_id, pos, "assistant", None, (item["call_id"],)))
        elif kind == "function_call_output":
            out.append(CheckRow(session_id, pos, "tool", result_for=item["call_id"]))
        elif item.get("role") == "assistant":
            parts = item.get("content") or []
            text = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
            out.append(CheckRow(session_id, pos, "assistant", text))
        else:
            content = item.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            out.append(CheckRow(session_id, pos, "user", text))
    return out


async def read_agent_items_pg(
    dsn: str, schema: str, table: str = "agent_messages"
) -> list[CheckRow]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": check_schema_name(schema)})
    try:
        rows = await conn.fetch(_AGENT_ITEMS_SQL.format(table=table))
    finally:
        await conn.close()
    return _agent_items((r[0], r[1]) for r in rows)


async def read_agent_items_sqlite(path: Path, table: str = "agent_messages") -> list[CheckRow]:
    def read() -> list[CheckRow]:
        with closing(sqlite3.connect(path)) as conn:
            return _agent_items(conn.execute(_AGENT_ITEMS_SQL.format(table=table)))

    return await anyio.to_thread.run_sync(read)
