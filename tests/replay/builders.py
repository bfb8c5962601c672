"""Terse constructors for canonical messages in tests."""

from __future__ import annotations

from typing import Any

from store.replay import (
    AssistantMessage,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    UserMessage,
)


def user(text: str, pos: int | None = None) -> UserMessage:
    return UserMessage((TextPart(text),), pos)


def call(call_id: str, name: str = "f", **arguments: Any) -> ToolCall:
    return ToolCall(call_id, name, arguments)


def asst(
    *calls: ToolCall,
    text: str = "",
    reasoning: tuple[Reasoning, ...] = (),
    pos: int | None = None,
) -> AssistantMessage:
    return AssistantMessage((TextPart(text),) if text else (), calls, reasoning, pos)


def res(
    call_id: str,
    name: str = "f",
    text: str = "out",
    pos: int | None = None,
    is_error: bool = False,
) -> ToolResult:
    return ToolResult(call_id, name, (TextPart(text),), is_error, pos)
