"""Anthropic Messages API: ``{"system"?: str, "messages": [...]}``.

Calls are ``tool_use`` blocks (input as an object) after the step's thinking and text
blocks; results are ``tool_result`` blocks with ``is_error`` at the start of the next user
message. Consecutive same-role messages are merged into one, results kept first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .format import Format, PlainCall
from .model import (
    AnthropicRedactedThinking,
    AnthropicThinking,
    ImagePart,
    JsonPart,
    ReplayAssistantMessage,
    ReplayToolResult,
    ResultPart,
    SystemMessage,
    TextPart,
    UserMessage,
)
from .render import json_copy, json_text


class Anthropic(Format):
    arguments_as_text = False
    takes_reasoning = (AnthropicThinking, AnthropicRedactedThinking)

    def __init__(self) -> None:
        self.systems: list[str] = []
        self.turns: list[dict[str, Any]] = []

    def body(self) -> dict[str, Any]:
        for turn in self.turns:
            if turn["role"] == "user":  # results first in a merged user turn (stable sort)
                turn["content"].sort(key=lambda block: block["type"] != "tool_result")
        body: dict[str, Any] = {"messages": self.turns}
        system = "\n\n".join(self.systems)
        if system:
            body["system"] = system
        return body

    def _add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.turns and self.turns[-1]["role"] == role:
            self.turns[-1]["content"].extend(blocks)
        else:
            self.turns.append({"role": role, "content": blocks})

    def system(self, message: SystemMessage) -> None:
        self.systems.append(message.text)

    def user(self, message: UserMessage) -> None:
        self._add("user", _content_blocks(message.parts))

    def user_texts(self, texts: list[str]) -> None:
        self._add("user", _text_blocks(texts))

    def assistant(self, message: ReplayAssistantMessage) -> None:
        blocks: list[dict[str, Any]] = []
        for item in message.reasoning:
            if isinstance(item, AnthropicThinking):
                blocks.append(
                    {"type": "thinking", "thinking": item.thinking, "signature": item.signature}
                )
            elif isinstance(item, AnthropicRedactedThinking):
                blocks.append({"type": "redacted_thinking", "data": item.data})
        blocks.extend(_content_blocks(message.parts))
        blocks.extend(_tool_use(c.id, c.name, json_copy(c.arguments)) for c in message.tool_calls)
        self._add("assistant", blocks)

    def assistant_texts(self, texts: list[str], calls: list[PlainCall]) -> None:
        self._add("assistant", [*_text_blocks(texts), *[_tool_use(*call) for call in calls]])

    def result(self, message: ReplayToolResult) -> None:
        self._result(message.call_id, message.is_error, _content_blocks(message.content))

    def result_texts(self, call_id: str, name: str, texts: list[str], is_error: bool) -> None:
        self._result(call_id, is_error, _text_blocks(texts))

    def _result(self, call_id: str, is_error: bool, content: list[dict[str, Any]]) -> None:
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": call_id,
            "is_error": is_error,
        }
        if content:
            block["content"] = content
        self._add("user", [block])


def _tool_use(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _text_blocks(texts: list[str]) -> list[dict[str, Any]]:
    return [block for t in texts if (block := _text_block(t)) is not None]


def _text_block(text: str) -> dict[str, Any] | None:
    return {"type": "text", "text": text} if text.strip() else None


def _content_blocks(parts: Sequence[ResultPart]) -> list[dict[str, Any]]:
    return [b for p in parts if (b := _content_block(p)) is not None]


def _content_block(part: ResultPart) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return _text_block(part.text)
    if isinstance(part, JsonPart):
        return _text_block(part.value if isinstance(part.value, str) else json_text(part.value))
    if isinstance(part, ImagePart):
        if part.url:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": part.mime_type, "data": part.data or ""},
        }
    return None
