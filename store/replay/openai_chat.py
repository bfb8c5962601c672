"""OpenAI Chat Completions (and DeepSeek, Qwen, Ollama, most compatible gateways).

One assistant message holds all of a step's calls in ``tool_calls`` (arguments as JSON
strings), followed by one ``tool`` message per call. A tool-only assistant message sends
``content: null``. DeepSeek's ``reasoning_content`` goes back on assistant messages that
called tools (thinking mode requires it there; older reasoners refuse it elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import (
    AssistantMessage,
    DeepSeekReasoning,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolResult,
    UserMessage,
)
from .render import arguments_json, image_url, result_text, texts


def to_openai_chat(messages: Sequence[Message]) -> dict[str, Any]:
    """``{"messages": [...]}`` for sanitized ``messages``."""
    return {"messages": [_message(m) for m in messages]}


def _message(message: Message) -> dict[str, Any]:
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.text}
    if isinstance(message, UserMessage):
        return {"role": "user", "content": _user_content(message)}
    if isinstance(message, AssistantMessage):
        return _assistant(message)
    return _tool(message)


def _user_content(message: UserMessage) -> str | list[dict[str, Any]]:
    if not any(isinstance(p, ImagePart) for p in message.parts):
        return "\n".join(texts(message.parts))
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": image_url(part)}})
        elif isinstance(part, TextPart) and part.text.strip():
            content.append({"type": "text", "text": part.text})
    return content


def _assistant(message: AssistantMessage) -> dict[str, Any]:
    text = "\n".join(texts(message.parts))
    out: dict[str, Any] = {"role": "assistant", "content": text}
    if message.tool_calls:
        out["content"] = text or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments_json(call)},
            }
            for call in message.tool_calls
        ]
        reasoning = [r.text for r in message.reasoning if isinstance(r, DeepSeekReasoning)]
        if reasoning:
            out["reasoning_content"] = "".join(reasoning)
    return out


def _tool(result: ToolResult) -> dict[str, Any]:
    return {
        "role": "tool",
        "tool_call_id": result.call_id,
        "content": result_text(result.content, result.is_error),
    }
