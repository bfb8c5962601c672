"""OpenAI Responses API: ``{"input": [...items]}``.

Calls are ``function_call`` items and results ``function_call_output`` items, paired by
``call_id``. A step's ``reasoning`` items are kept directly before the calls they produced
(or before the message, for a step with no calls); a call's ``fc_`` item id is sent only
together with its reasoning, since an id without it is refused.
"""

from __future__ import annotations

from typing import Any

from .format import Format, PlainCall
from .model import (
    ImagePart,
    OpenAIReasoning,
    ReplayAssistantMessage,
    ReplayToolResult,
    SystemMessage,
    TextPart,
    UserMessage,
)
from .render import arguments_json, image_url, joined, marked_error, result_text, texts


class OpenAIResponses(Format):
    arguments_as_text = True
    takes_reasoning = (OpenAIReasoning,)

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def body(self) -> dict[str, Any]:
        return {"input": self.items}

    def system(self, message: SystemMessage) -> None:
        self.items.append({"type": "message", "role": "system", "content": message.text})

    def user(self, message: UserMessage) -> None:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                content.append({"type": "input_image", "image_url": image_url(part)})
            elif isinstance(part, TextPart) and part.text.strip():
                content.append(_input_text(part.text))
        self._user(content)

    def user_texts(self, texts: list[str]) -> None:
        self._user([_input_text(t) for t in texts if t.strip()])

    def _user(self, content: list[dict[str, Any]]) -> None:
        self.items.append({"type": "message", "role": "user", "content": content})

    def assistant(self, message: ReplayAssistantMessage) -> None:
        reasoning = [_reasoning(r) for r in message.reasoning if isinstance(r, OpenAIReasoning)]
        calls = []
        for call in message.tool_calls:
            item = _call(call.id, call.name, arguments_json(call))
            if reasoning and call.item_id:
                item["id"] = call.item_id
            calls.append(item)
        self._assistant("\n".join(texts(message.parts)), calls, reasoning)

    def assistant_texts(self, texts: list[str], calls: list[PlainCall]) -> None:
        self._assistant(joined(texts), [_call(*call) for call in calls], [])

    def _assistant(
        self, text: str, calls: list[dict[str, Any]], reasoning: list[dict[str, Any]]
    ) -> None:
        said = [{"type": "message", "role": "assistant", "content": text}] if text else []
        if calls:
            self.items.extend([*said, *reasoning, *calls])
        elif said:
            self.items.extend([*reasoning, *said])

    def result(self, message: ReplayToolResult) -> None:
        self._output(message.call_id, result_text(message.content, message.is_error))

    def result_texts(self, call_id: str, name: str, texts: list[str], is_error: bool) -> None:
        self._output(call_id, marked_error("\n".join(texts), is_error))

    def _output(self, call_id: str, output: str) -> None:
        self.items.append({"type": "function_call_output", "call_id": call_id, "output": output})


def _input_text(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def _reasoning(item: OpenAIReasoning) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "reasoning",
        "id": item.id,
        "summary": [{"type": "summary_text", "text": s} for s in item.summary],
    }
    if item.encrypted_content is not None:
        out["encrypted_content"] = item.encrypted_content
    return out
