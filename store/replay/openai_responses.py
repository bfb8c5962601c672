"""OpenAI Responses API: ``{"input": [...items]}``.

Calls are ``function_call`` items and results ``function_call_output`` items, paired by
``call_id``. A step's ``reasoning`` items are kept directly before the calls they produced
(or before the message, for a step with no calls); a call's ``fc_`` item id is sent only
together with its reasoning, since an id without it is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import (
    AssistantMessage,
    ImagePart,
    Message,
    OpenAIReasoning,
    SystemMessage,
    TextPart,
    ToolResult,
    UserMessage,
)
from .render import arguments_json, image_url, result_text, texts


def to_openai_responses(messages: Sequence[Message]) -> dict[str, Any]:
    """``{"input": [...]}`` for sanitized ``messages``."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            items.append({"type": "message", "role": "system", "content": message.text})
        elif isinstance(message, UserMessage):
            items.append({"type": "message", "role": "user", "content": _user_content(message)})
        elif isinstance(message, AssistantMessage):
            items.extend(_assistant(message))
        else:
            items.append(_output(message))
    return {"input": items}


def _user_content(message: UserMessage) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            content.append({"type": "input_image", "image_url": image_url(part)})
        elif isinstance(part, TextPart) and part.text.strip():
            content.append({"type": "input_text", "text": part.text})
    return content


def _assistant(message: AssistantMessage) -> list[dict[str, Any]]:
    reasoning = [_reasoning(r) for r in message.reasoning if isinstance(r, OpenAIReasoning)]
    text = "\n".join(texts(message.parts))
    said = [{"type": "message", "role": "assistant", "content": text}] if text else []
    calls = []
    for call in message.tool_calls:
        item: dict[str, Any] = {
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": arguments_json(call),
        }
        if reasoning and call.item_id:
            item["id"] = call.item_id
        calls.append(item)
    if calls:
        return [*said, *reasoning, *calls]
    return [*reasoning, *said] if said else []


def _reasoning(item: OpenAIReasoning) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "reasoning",
        "id": item.id,
        "summary": [{"type": "summary_text", "text": s} for s in item.summary],
    }
    if item.encrypted_content is not None:
        out["encrypted_content"] = item.encrypted_content
    return out


def _output(result: ToolResult) -> dict[str, Any]:
    return {
        "type": "function_call_output",
        "call_id": result.call_id,
        "output": result_text(result.content, result.is_error),
    }
