"""Terse constructors for canonical messages in tests."""

from __future__ import annotations

from typing import Any

from store.replay import (
    Reasoning,
    ReplayAssistantMessage,
    ReplayToolCall,
    ReplayToolResult,
    TextPart,
    UserMessage,
)


def user(text: str, pos: int | None = None) -> UserMessage:
    return UserMessage((TextPart(text),), pos)


def call(call_id: str, name: str = "f", **arguments: Any) -> ReplayToolCall:
    return ReplayToolCall(call_id, name, arguments)


def asst(
    *calls: ReplayToolCall,
    text: str = "",
    reasoning: tuple[Reasoning, ...] = (),
    pos: int | None = None,
) -> ReplayAssistantMessage:
    return ReplayAssistantMessage((TextPart(text),) if text else (), calls, reasoning, pos)


def res(
    call_id: str,
    name: str = "f",
    text: str = "out",
    pos: int | None = None,
    is_error: bool = False,
) -> ReplayToolResult:
    return ReplayToolResult(call_id, name, (TextPart(text),), is_error, pos)
