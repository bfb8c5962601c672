"""OpenAI Chat Completions (and DeepSeek, Qwen, Ollama, most compatible gateways).

One assistant message holds all of a step's calls in ``tool_calls`` (arguments as JSON
strings), followed by one ``tool`` message per call. A tool-only assistant message sends
``content: null``. DeepSeek's ``reasoning_content`` goes back on assistant messages that
called tools (thinking mode requires it there; older reasoners refuse it elsewhere).
"""

from __future__ import annotations

from typing import Any

from .format import Format, PlainCall
from .model import (
    DeepSeekReasoning,
    ImagePart,
    ReplayAssistantMessage,
    ReplayToolResult,
    SystemMessage,
    TextPart,
    UserMessage,
)
from .render import arguments_json, image_url, joined, marked_error, result_text, texts


class OpenAIChat(Format):
    arguments_as_text = True
    takes_reasoning = (DeepSeekReasoning,)

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def body(self) -> dict[str, Any]:
        return {"messages": self.messages}

    def system(self, message: SystemMessage) -> None:
        self.messages.append({"role": "system", "content": message.text})

    def user(self, message: UserMessage) -> None:
        if not any(isinstance(p, ImagePart) for p in message.parts):
            self.user_texts([p.text for p in message.parts if isinstance(p, TextPart)])
            return
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                content.append({"type": "image_url", "image_url": {"url": image_url(part)}})
            elif isinstance(part, TextPart) and part.text.strip():
                content.append({"type": "text", "text": part.text})
        self.messages.append({"role": "user", "content": content})

    def user_texts(self, texts: list[str]) -> None:
        self.messages.append({"role": "user", "content": joined(texts)})

    def assistant(self, message: ReplayAssistantMessage) -> None:
        calls = [_call(c.id, c.name, arguments_json(c)) for c in message.tool_calls]
        reasoning = [r.text for r in message.reasoning if isinstance(r, DeepSeekReasoning)]
        self._assistant("\n".join(texts(message.parts)), calls, reasoning)

    def assistant_texts(self, texts: list[str], calls: list[PlainCall]) -> None:
        self._assistant(joined(texts), [_call(*call) for call in calls], [])

    def _assistant(self, text: str, calls: list[dict[str, Any]], reasoning: list[str]) -> None:
        out: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            out["content"] = text or None
            out["tool_calls"] = calls
            if reasoning:
                out["reasoning_content"] = "".join(reasoning)
        self.messages.append(out)

    def result(self, message: ReplayToolResult) -> None:
        self._tool(message.call_id, result_text(message.content, message.is_error))

    def result_texts(self, call_id: str, name: str, texts: list[str], is_error: bool) -> None:
        self._tool(call_id, marked_error("\n".join(texts), is_error))

    def _tool(self, call_id: str, content: str) -> None:
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
