"""The canonical, provider-neutral message model that replay works on.

Readers turn stored history into these messages, the sanitizer repairs them, and one
module per provider turns them into a request body. Every message keeps the ``position``
of the row it came from (``None`` for messages the sanitizer made), so a repair can name it.

The assistant message, tool call and tool result of this model are ``ReplayAssistantMessage``,
``ReplayToolCall`` and ``ReplayToolResult``: ``store.AssistantMessage``, ``store.ToolCall`` and
``store.ToolResult`` are what a turn writes, with other fields.

Mappings inside these frozen dataclasses (tool arguments, JSON values) are not copied:
treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# --- content parts -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image, inline (``mime_type`` + base64 ``data``) or by ``url``."""

    mime_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class JsonPart:
    """A JSON value returned by a tool."""

    value: Any


UserPart = TextPart | ImagePart
ResultPart = TextPart | ImagePart | JsonPart


# --- reasoning that must be sent back ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenAIReasoning:
    """An OpenAI Responses ``reasoning`` item (``rs_...``)."""

    id: str
    encrypted_content: str | None = None
    summary: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeepSeekReasoning:
    """DeepSeek's ``reasoning_content`` of an assistant message."""

    text: str


@dataclass(frozen=True, slots=True)
class AnthropicThinking:
    """An Anthropic ``thinking`` block, sent back with its signature unchanged."""

    thinking: str
    signature: str


@dataclass(frozen=True, slots=True)
class AnthropicRedactedThinking:
    """An Anthropic ``redacted_thinking`` block."""

    data: str


@dataclass(frozen=True, slots=True)
class GeminiThought:
    """A Gemini part that carries a ``thoughtSignature`` (a thought summary when
    ``thought``), sent back to Gemini as it came."""

    text: str
    signature: str | None = None
    thought: bool = True


Reasoning = (
    OpenAIReasoning
    | DeepSeekReasoning
    | AnthropicThinking
    | AnthropicRedactedThinking
    | GeminiThought
)


# --- tool calls and messages -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayToolCall:
    """One tool call. ``arguments`` is a JSON object. ``thought_signature`` is Gemini's
    per-call signature; ``item_id`` is the OpenAI Responses ``function_call`` item id."""

    id: str
    name: str
    arguments: Mapping[str, Any]
    thought_signature: str | None = None
    item_id: str | None = None
    #: the arguments' JSON text as stored, when known: sent as is where a format wants a
    #: string (not compared: it is another spelling of ``arguments``)
    arguments_json: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SystemMessage:
    role: ClassVar[str] = "system"
    text: str
    position: int | None = None


@dataclass(frozen=True, slots=True)
class UserMessage:
    role: ClassVar[str] = "user"
    parts: tuple[UserPart, ...]
    position: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayAssistantMessage:
    """One model response: text, the reasoning to send back, and its tool calls."""

    role: ClassVar[str] = "assistant"
    parts: tuple[TextPart, ...] = ()
    tool_calls: tuple[ReplayToolCall, ...] = ()
    reasoning: tuple[Reasoning, ...] = ()
    position: int | None = None


@dataclass(frozen=True, slots=True)
class ReplayToolResult:
    role: ClassVar[str] = "tool"
    call_id: str
    name: str
    content: tuple[ResultPart, ...] = ()
    is_error: bool = False
    position: int | None = None


Message = SystemMessage | UserMessage | ReplayAssistantMessage | ReplayToolResult


def has_text(parts: tuple[Any, ...]) -> bool:
    """Whether ``parts`` hold any non-blank text."""
    return any(isinstance(p, TextPart) and p.text.strip() for p in parts)


def is_empty_user(message: UserMessage) -> bool:
    """A user message with no non-blank text and no image: nothing a provider accepts."""
    return not has_text(message.parts) and not any(isinstance(p, ImagePart) for p in message.parts)
