"""Google Gemini ``generateContent``: ``{"systemInstruction"?: ..., "contents": [...]}``.

Calls are ``functionCall`` parts (args as an object, with the call's ``thoughtSignature``)
of a ``model`` turn; results are as many ``functionResponse`` parts at the start of the next
``user`` turn. Consecutive same-role turns are merged, so a call turn always follows a user
or function-response turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import (
    AssistantMessage,
    ImagePart,
    JsonPart,
    Message,
    SystemMessage,
    TextPart,
    ToolResult,
    UserMessage,
)
from .render import json_copy, result_text, texts


def to_gemini(messages: Sequence[Message]) -> dict[str, Any]:
    """``{"contents": [...]}`` (plus ``systemInstruction``) for sanitized ``messages``."""
    contents: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            continue
        role, parts = _parts(message)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    for content in contents:
        if content["role"] == "user":  # responses first in a merged user turn (stable sort)
            content["parts"].sort(key=lambda part: "functionResponse" not in part)
    body: dict[str, Any] = {"contents": contents}
    system = [m.text for m in messages if isinstance(m, SystemMessage) and m.text.strip()]
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    return body


def _parts(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(message, UserMessage):
        return "user", [_user_part(p) for p in message.parts if _keep(p)]
    if isinstance(message, AssistantMessage):
        parts: list[dict[str, Any]] = [{"text": t} for t in texts(message.parts)]
        for call in message.tool_calls:
            part: dict[str, Any] = {
                "functionCall": {"name": call.name, "args": json_copy(call.arguments)}
            }
            if call.thought_signature:
                part["thoughtSignature"] = call.thought_signature
            parts.append(part)
        return "model", parts
    assert isinstance(message, ToolResult)
    return "user", [{"functionResponse": {"name": message.name, "response": _response(message)}}]


def _keep(part: TextPart | ImagePart) -> bool:
    return isinstance(part, ImagePart) or bool(part.text.strip())


def _user_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if part.url:
        return {"fileData": {"mimeType": part.mime_type or "", "fileUri": part.url}}
    return {"inlineData": {"mimeType": part.mime_type or "", "data": part.data or ""}}


def _response(result: ToolResult) -> dict[str, Any]:
    if result.is_error:
        return {"error": result_text(result.content, False)}
    if len(result.content) == 1 and isinstance(result.content[0], JsonPart):
        return {"output": json_copy(result.content[0].value)}
    return {"output": result_text(result.content, False)}
