"""Readers into the canonical model: the store's own history, and Instatic ``ai_messages``
rows (a JSON dump, or the table itself over a SQLAlchemy async URL).

Readers convert one stored row into one message and keep its position; they repair
nothing (that is the sanitizer's job) and refuse what they cannot read with
``ReplayInputError``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from ..errors import InvalidMessage
from ..messages import StoredMessage, reasoning_part
from .model import (
    AnthropicRedactedThinking,
    AnthropicThinking,
    DeepSeekReasoning,
    GeminiThought,
    ImagePart,
    JsonPart,
    Message,
    OpenAIReasoning,
    Reasoning,
    ReplayAssistantMessage,
    ReplayToolCall,
    ReplayToolResult,
    ResultPart,
    TextPart,
    UserMessage,
)


class ReplayInputError(ValueError):
    """The input cannot be read as the format it was said to be in."""


# --- the store's own history -------------------------------------------------------------


def from_stored_messages(messages: Iterable[StoredMessage]) -> list[Message]:
    """Canonical messages for the store's history. Reasoning parts (``{"type":
    "reasoning", "format": "openai-responses" | "deepseek" | "anthropic", ...}``) and each
    call's ``provider_data`` (``thought_signature``, ``openai_item_id``) are carried over;
    reasoning in any other format is not replayed, since no provider here takes it back."""
    return [
        stored_message(
            m.position,
            m.role,
            m.content,
            tuple(
                stored_call(
                    c.id,
                    c.name,
                    c.arguments,
                    c.provider_data,
                    getattr(c, "arguments_json", None),
                )
                for c in m.tool_calls
            ),
            m.tool_call_id,
            m.tool_name,
            m.is_error,
        )
        for m in messages
    ]


def stored_message(
    position: int,
    role: str,
    content: Sequence[Mapping[str, Any]],
    calls: tuple[ReplayToolCall, ...],
    call_id: str | None,
    tool_name: str | None,
    is_error: bool,
) -> Message:
    """The canonical message for one stored message, given its fields (its calls already
    read with ``stored_call``)."""
    where = f"message at position {position}"
    if role == "user":
        return UserMessage(tuple(_stored_user_part(p, where) for p in content), position)
    if role == "assistant":
        parts: list[TextPart] = []
        reasoning: list[Reasoning] = []
        for part in content:
            if part.get("type") == "text":
                parts.append(TextPart(str(part.get("text", ""))))
            elif part.get("type") == "reasoning":
                item = _stored_reasoning(part, where)
                if item is not None:
                    reasoning.append(item)
            else:
                raise ReplayInputError(f"{where}: assistant part of type {part.get('type')!r}")
        return ReplayAssistantMessage(tuple(parts), calls, tuple(reasoning), position)
    if role == "tool":
        if not call_id:
            raise ReplayInputError(f"{where}: tool message without tool_call_id")
        results = tuple(_stored_result_part(p, where) for p in content)
        return ReplayToolResult(call_id, tool_name or "", results, is_error, position)
    raise ReplayInputError(f"{where}: unknown role {role!r}")


def stored_call(
    call_id: str,
    name: str,
    arguments: Mapping[str, Any],
    provider_data: Mapping[str, Any] | None,
    arguments_json: str | None,
) -> ReplayToolCall:
    """The canonical tool call for one stored call, given its fields (``arguments_json``:
    the arguments' JSON text as stored, if known)."""
    extra: Mapping[str, Any] = provider_data or {}
    signature = extra.get("thought_signature", extra.get("thoughtSignature"))
    return ReplayToolCall(
        call_id,
        name,
        arguments,
        signature,
        extra.get("openai_item_id"),
        arguments_json=arguments_json,
    )


def _stored_user_part(part: Mapping[str, Any], where: str) -> TextPart | ImagePart:
    if part.get("type") == "text":
        return TextPart(str(part.get("text", "")))
    if part.get("type") == "image":
        return ImagePart(part.get("mime_type"), part.get("data"), part.get("url"))
    raise ReplayInputError(f"{where}: user part of type {part.get('type')!r}")


def _stored_result_part(part: Mapping[str, Any], where: str) -> ResultPart:
    if part.get("type") == "json":
        for key in ("value", "data", "json"):
            if key in part:
                return JsonPart(part[key])
        return JsonPart({k: v for k, v in part.items() if k != "type"})
    return _stored_user_part(part, where)


def _stored_reasoning(part: Mapping[str, Any], where: str) -> Reasoning | None:
    if part.get("format") is None:  # written before reasoning was stored with its format
        try:
            part = reasoning_part(part, where)
        except InvalidMessage:
            return None
    kind = part.get("format")
    if kind == "openai-responses":
        if not isinstance(part.get("id"), str):
            raise ReplayInputError(f"{where}: openai-responses reasoning without an id")
        summary = tuple(
            s if isinstance(s, str) else str(s.get("text", "")) for s in part.get("summary") or ()
        )
        return OpenAIReasoning(part["id"], part.get("encrypted_content"), summary)
    if kind == "deepseek":
        return DeepSeekReasoning(str(part.get("text", part.get("reasoning_content", ""))))
    if kind == "anthropic":
        if "thinking" in part:
            return AnthropicThinking(str(part["thinking"]), str(part.get("signature", "")))
        if "data" in part:
            return AnthropicRedactedThinking(str(part["data"]))
        raise ReplayInputError(f"{where}: anthropic reasoning with neither thinking nor data")
    if kind == "gemini":
        signature = part.get("thought_signature")
        return GeminiThought(
            str(part.get("text", "")),
            signature if isinstance(signature, str) else None,
            bool(part.get("thought", True)),
        )
    return None


# --- Instatic ai_messages rows -----------------------------------------------------------


def from_instatic_rows(
    rows: Iterable[Mapping[str, Any]], *, conversation_id: str | None = None
) -> list[Message]:
    """Canonical messages for Instatic ``ai_messages`` rows, ordered by position. With
    ``conversation_id``, rows of other conversations are left out."""
    rows = list(rows)
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ReplayInputError(f"row {index} is not an object")
    selected = [
        row
        for row in rows
        if conversation_id is None or row.get("conversation_id") == conversation_id
    ]
    if all(_position(row) is not None for row in selected):
        selected.sort(key=lambda row: _position(row) or 0)
    return [_instatic_row(row) for row in selected]


def read_instatic_json(data: Any, *, conversation_id: str | None = None) -> list[Message]:
    """Canonical messages for a decoded JSON dump: ``{"rows": [...]}`` or a bare list."""
    rows = data.get("rows") if isinstance(data, Mapping) else data
    if not isinstance(rows, list):
        raise ReplayInputError("expected an object with a 'rows' list, or a list of rows")
    return from_instatic_rows(rows, conversation_id=conversation_id)


def load_instatic_file(
    path: str | os.PathLike[str], *, conversation_id: str | None = None
) -> list[Message]:
    """Read an Instatic JSON dump from ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ReplayInputError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReplayInputError(f"{os.fspath(path)!r} is not JSON: {exc}") from exc
    return read_instatic_json(data, conversation_id=conversation_id)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


async def read_instatic_table(
    url: str, conversation_id: str, table: str = "ai_messages"
) -> list[Message]:
    """Read one conversation from an Instatic ``ai_messages`` table over a SQLAlchemy async
    URL (``sqlite+aiosqlite:///...``, ``postgresql+asyncpg://...``). ``table`` may be
    schema-qualified (``schema.table``)."""
    names = table.split(".")
    if len(names) > 2 or not all(_IDENTIFIER.fullmatch(n) for n in names):
        raise ReplayInputError(f"not a table name: {table!r}")
    _refuse_missing_sqlite_file(url)
    engine = create_async_engine(url)
    try:
        quoted = ".".join(engine.dialect.identifier_preparer.quote(n) for n in names)
        query = text(
            "SELECT conversation_id, position, role, content_json, tool_call_id, tool_name "
            f"FROM {quoted} WHERE conversation_id = :conversation_id ORDER BY position"
        )
        async with engine.connect() as connection:
            result = await connection.execute(query, {"conversation_id": conversation_id})
            rows = [dict(row) for row in result.mappings()]
    finally:
        await engine.dispose()
    return from_instatic_rows(rows)


def _refuse_missing_sqlite_file(url: str) -> None:
    """Connecting to a SQLite path that does not exist would create an empty database."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if not database.startswith("file:") and not os.path.exists(database):
        raise ReplayInputError(f"no SQLite database file at {database!r}")


def _position(row: Mapping[str, Any]) -> int | None:
    value = row.get("position")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _blocks(row: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    raw = row.get("content_json")
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ReplayInputError(f"{where}: content_json is not JSON: {exc}") from exc
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(b, Mapping) for b in raw):
        raise ReplayInputError(f"{where}: content_json must be a list of blocks")
    return raw


def _instatic_row(row: Mapping[str, Any]) -> Message:
    position = _position(row)
    where = f"row at position {position}" if position is not None else f"row {row.get('id')!r}"
    blocks = _blocks(row, where)
    role = row.get("role")
    if role == "user":
        return UserMessage(tuple(_instatic_part(b, where) for b in blocks), position)
    if role == "assistant":
        parts: list[TextPart] = []
        calls: list[ReplayToolCall] = []
        for block in blocks:
            if block.get("kind") == "toolCall":
                calls.append(_instatic_call(block, row, where))
            else:
                part = _instatic_part(block, where)
                if not isinstance(part, TextPart):
                    raise ReplayInputError(f"{where}: an assistant row cannot hold an image")
                parts.append(part)
        return ReplayAssistantMessage(tuple(parts), tuple(calls), (), position)
    if role == "tool":
        return _instatic_result(blocks, row, where, position)
    raise ReplayInputError(f"{where}: unknown role {role!r}")


def _instatic_part(block: Mapping[str, Any], where: str) -> TextPart | ImagePart:
    kind = block.get("kind")
    if kind == "text":
        return TextPart(str(block.get("text", "")))
    if kind == "image":
        return ImagePart(block.get("mimeType"), block.get("data"), block.get("url"))
    raise ReplayInputError(f"{where}: unexpected content block kind {kind!r}")


def _instatic_call(block: Mapping[str, Any], row: Mapping[str, Any], where: str) -> ReplayToolCall:
    call_id = block.get("toolCallId") or row.get("tool_call_id")
    name = block.get("toolName") or row.get("tool_name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise ReplayInputError(f"{where}: toolCall block without toolCallId or toolName")
    arguments = block.get("input")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ReplayInputError(f"{where}: toolCall input is not JSON: {exc}") from exc
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise ReplayInputError(f"{where}: toolCall input must be a JSON object")
    return ReplayToolCall(call_id, name, dict(arguments))


def _instatic_result(
    blocks: list[Mapping[str, Any]], row: Mapping[str, Any], where: str, position: int | None
) -> ReplayToolResult:
    call_id = row.get("tool_call_id")
    status = next((b for b in blocks if b.get("kind") == "toolResult"), None)
    if not isinstance(call_id, str) and status is not None:
        call_id = status.get("toolCallId")
    if not isinstance(call_id, str) or not call_id:
        raise ReplayInputError(f"{where}: tool row without tool_call_id")
    content: list[ResultPart] = [
        _instatic_part(b, where) for b in blocks if b.get("kind") != "toolResult"
    ]
    ok = True if status is None else status.get("ok") is not False
    if not content:  # successful results store only ``ok``; errors carry ``error``
        error = None if status is None else status.get("error")
        if not ok and isinstance(error, str) and error:
            content = [TextPart(error)]
        else:
            content = [JsonPart({"ok": ok})]
    return ReplayToolResult(
        call_id, str(row.get("tool_name") or ""), tuple(content), not ok, position
    )
