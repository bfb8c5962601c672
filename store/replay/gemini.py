"""Google Gemini ``generateContent``: ``{"systemInstruction"?: ..., "contents": [...]}``.

Calls are ``functionCall`` parts (args as an object, with the call's ``thoughtSignature``)
of a ``model`` turn; results are as many ``functionResponse`` parts at the start of the next
``user`` turn. Consecutive same-role turns are merged, so a call turn always follows a user
or function-response turn.
"""

from __future__ import annotations

from typing import Any

from .format import Format, PlainCall
from .model import (
    GeminiThought,
    ImagePart,
    JsonPart,
    ReplayAssistantMessage,
    ReplayToolResult,
    SystemMessage,
    TextPart,
    UserMessage,
)
from .render import json_copy, result_text, texts


class Gemini(Format):
    arguments_as_text = False
    takes_reasoning = (GeminiThought,)

    def __init__(self) -> None:
        self.systems: list[str] = []
        self.contents: list[dict[str, Any]] = []

    def body(self) -> dict[str, Any]:
        for content in self.contents:
            if content["role"] == "user":  # responses first in a merged user turn (stable sort)
                content["parts"].sort(key=lambda part: "functionResponse" not in part)
        body: dict[str, Any] = {"contents": self.contents}
        if self.systems:
            body["systemInstruction"] = {"parts": [{"text": text} for text in self.systems]}
        return body

    def _add(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def system(self, message: SystemMessage) -> None:
        if message.text.strip():
            self.systems.append(message.text)

    def user(self, message: UserMessage) -> None:
        self._add("user", [_user_part(p) for p in message.parts if _keep(p)])

    def user_texts(self, texts: list[str]) -> None:
        self._add("user", [{"text": t} for t in texts if t.strip()])

    def assistant(self, message: ReplayAssistantMessage) -> None:
        parts: list[dict[str, Any]] = [
            _thought(r) for r in message.reasoning if isinstance(r, GeminiThought)
        ]
        parts += [{"text": t} for t in texts(message.parts)]
        for call in message.tool_calls:
            part = _function_call(call.name, json_copy(call.arguments))
            if call.thought_signature:
                part["thoughtSignature"] = call.thought_signature
            parts.append(part)
        self._add("model", parts)

    def assistant_texts(self, texts: list[str], calls: list[PlainCall]) -> None:
        parts = [{"text": t} for t in texts if t.strip()]
        parts.extend(_function_call(name, arguments) for _, name, arguments in calls)
        self._add("model", parts)

    def result(self, message: ReplayToolResult) -> None:
        if message.is_error:
            response = {"error": result_text(message.content, False)}
        elif len(message.content) == 1 and isinstance(message.content[0], JsonPart):
            response = {"output": json_copy(message.content[0].value)}
        else:
            response = {"output": result_text(message.content, False)}
        self._response(message.name, response)

    def result_texts(self, call_id: str, name: str, texts: list[str], is_error: bool) -> None:
        self._response(name, {"error" if is_error else "output": "\n".join(texts)})

    def _response(self, name: str, response: dict[str, Any]) -> None:
        self._add("user", [{"functionResponse": {"name": name, "response": response}}])


def _thought(item: GeminiThought) -> dict[str, Any]:
    part: dict[str, Any] = {"text": item.text}
    if item.thought:
        part["thought"] = True
    if item.signature:
        part["thoughtSignature"] = item.signature
    return part


def _function_call(name: str, arguments: Any) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": arguments}}


def _keep(part: TextPart | ImagePart) -> bool:
    return isinstance(part, ImagePart) or bool(part.text.strip())


def _user_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if part.url:
        return {"fileData": {"mimeType": part.mime_type or "", "fileUri": part.url}}
    return {"inlineData": {"mimeType": part.mime_type or "", "data": part.data or ""}}
