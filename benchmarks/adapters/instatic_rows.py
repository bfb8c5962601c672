"""The Instatic ``ai_messages`` table shared by raw, raw-locked and naive: its DDL on both
backends and the rows a turn produces in it.

Row shape (DESIGN.md): ``ai_messages(id, conversation_id, position, role, content_json,
tool_call_id, tool_name, created_at)``, unique ``(conversation_id, position)``; the token and
cost columns are left out. Positions count from 0. A step is an assistant text row (the
runner's ``text`` event), one assistant row per tool call, then one ``tool`` row per result,
as in ``tests/replay/data/instatic-bricked-conversation.json``. Unlike Instatic, a successful
result keeps its output (``{"kind": "toolResult", "ok": true, "output": ...}``) so that every
system under test stores the same payload bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from .base import PreloadTurn, ToolCall, ToolResult

COLUMNS = ("conversation_id", "position", "role", "content_json", "tool_call_id", "tool_name")

PG_DDL = """
CREATE TABLE ai_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id text NOT NULL,
    position integer NOT NULL,
    role text NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content_json jsonb NOT NULL,
    tool_call_id text,
    tool_name text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (conversation_id, position)
)
"""

SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS ai_messages (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content_json TEXT NOT NULL,
    tool_call_id TEXT,
    tool_name TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (conversation_id, position)
)
"""

# (role, content_json, tool_call_id, tool_name): a row without its conversation and position
Row = tuple[str, str, str | None, str | None]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def user_row(text: str) -> Row:
    return ("user", _dumps([{"kind": "text", "text": text}]), None, None)


def assistant_rows(text: str, calls: Sequence[ToolCall]) -> list[Row]:
    rows: list[Row] = [("assistant", _dumps([{"kind": "text", "text": text}]), None, None)]
    for c in calls:
        block = {"kind": "toolCall", "toolCallId": c.id, "toolName": c.name, "input": c.arguments}
        rows.append(("assistant", _dumps([block]), c.id, c.name))
    return rows


def result_row(r: ToolResult) -> Row:
    block: dict[str, object] = {"kind": "toolResult", "ok": not r.is_error}
    block["error" if r.is_error else "output"] = r.output
    return ("tool", _dumps([block]), r.call_id, r.name)


def step_rows(text: str, calls: Sequence[ToolCall], results: Sequence[ToolResult]) -> list[Row]:
    return [*assistant_rows(text, calls), *(result_row(r) for r in results)]


def positioned(conversation_id: str, first: int, rows: Iterable[Row]) -> list[tuple[object, ...]]:
    """Rows ready to insert, positions ``first, first + 1, ...`` (``COLUMNS`` order)."""
    return [(conversation_id, first + i, *row) for i, row in enumerate(rows)]


def preload_records(
    turns: Iterable[PreloadTurn], next_pos: dict[str, int]
) -> Iterator[tuple[object, ...]]:
    """Insert-ready rows for finished history; advances ``next_pos`` (default 0)."""
    for t in turns:
        rows = [user_row(t.user_text)]
        for text, calls, results in t.steps:
            rows.extend(step_rows(text, calls, results))
        first = next_pos.get(t.conversation_id, 0)
        next_pos[t.conversation_id] = first + len(rows)
        yield from positioned(t.conversation_id, first, rows)


def text_of(content_json: str) -> str | None:
    """The text block of a user or assistant row (for the checker)."""
    for block in json.loads(content_json):
        if block.get("kind") == "text":
            return str(block.get("text", ""))
    return None
