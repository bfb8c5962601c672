"""Anthropic Messages API: ``{"system"?: str, "messages": [...]}``.

Calls are ``tool_use`` blocks (input as an object) after the step's thinking and text
blocks; results are ``tool_result`` blocks with ``is_error`` at the start of the next user
message. Consecutive same-role messages are merged into one, results kept first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import (
    AnthropicRedactedThinking,
    AnthropicThinking,
    AssistantMessage,
    ImagePart,
    JsonPart,
    Message,
    ResultPart,
    SystemMessage,
    TextPart,
    ToolResult,
    UserMessage,
)
from .render import json_copy, json_text


def to_anthropic(messages: Sequence[Message]) -> dict[str, Any]:
    """``{"system"?: ..., "messages": [...]}`` for sanitized ``messages``."""
    system = "\n\n".join(m.text for m in messages if isinstance(m, SystemMessage))
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            continue
        role, blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":  # results first in a merged user turn (stable sort)
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    body: dict[str, Any] = {"messages": turns}
    if system:
        body["system"] = system
    return body


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(message, UserMessage):
        return "user", [b for p in message.parts if (b := _content_block(p)) is not None]
    if isinstance(message, AssistantMessage):
        return "assistant", _assistant(message)
    assert isinstance(message, ToolResult)
    return "user", [_result(message)]


def _assistant(message: AssistantMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for item in message.reasoning:
        if isinstance(item, AnthropicThinking):
            blocks.append(
                {"type": "thinking", "thinking": item.thinking, "signature": item.signature}
            )
        elif isinstance(item, AnthropicRedactedThinking):
            blocks.append({"type": "redacted_thinking", "data": item.data})
    blocks.extend(b for p in message.parts if (b := _content_block(p)) is not None)
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": json_copy(c.arguments)}
        for c in message.tool_calls
    )
    return blocks


def _result(result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": result.call_id,
        "is_error": result.is_error,
    }
    content = [b for p in result.content if (b := _content_block(p)) is not None]
    if content:
        block["content"] = content
    return block


def _content_block(part: ResultPart) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text.strip() else None
    if isinstance(part, JsonPart):
        text = part.value if isinstance(part.value, str) else json_text(part.value)
        return {"type": "text", "text": text} if text.strip() else None
    if isinstance(part, ImagePart):
        if part.url:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": part.mime_type, "data": part.data or ""},
        }
    return None
