"""Replay: a provider-valid request from any stored history, with a repair report.

``build_request(messages, "anthropic")`` sanitizes canonical messages (see ``readers`` to get
them from stored rows) and formats them for one provider; it returns the body fields and
the list of repairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .anthropic import to_anthropic
from .gemini import to_gemini
from .model import (
    AnthropicRedactedThinking,
    AnthropicThinking,
    AssistantMessage,
    DeepSeekReasoning,
    ImagePart,
    JsonPart,
    Message,
    OpenAIReasoning,
    Reasoning,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolResult,
    UserMessage,
)
from .openai_chat import to_openai_chat
from .openai_responses import to_openai_responses
from .pairing import Unanswered
from .readers import (
    ReplayInputError,
    from_instatic_rows,
    from_stored_messages,
    load_instatic_file,
    read_instatic_json,
    read_instatic_table,
)
from .repair import REPAIR_KINDS, Repair
from .sanitize import SanitizeResult, sanitize

Formatter = Callable[[Sequence[Message]], dict[str, Any]]

PROVIDERS: Mapping[str, Formatter] = {
    "openai-chat": to_openai_chat,
    "openai-responses": to_openai_responses,
    "anthropic": to_anthropic,
    "gemini": to_gemini,
}


def build_request(
    messages: Sequence[Message], provider: str, *, unanswered: Unanswered = "synthesize"
) -> tuple[dict[str, Any], list[Repair]]:
    """Sanitize ``messages`` and format them for ``provider`` (a key of ``PROVIDERS``).
    Returns the request body fields and the repairs made."""
    formatter = PROVIDERS.get(provider)
    if formatter is None:
        raise ValueError(f"unknown provider {provider!r}; choose one of {sorted(PROVIDERS)}")
    result = sanitize(messages, unanswered=unanswered)
    return formatter(result.messages), list(result.repairs)


__all__ = [
    "PROVIDERS",
    "REPAIR_KINDS",
    "AnthropicRedactedThinking",
    "AnthropicThinking",
    "AssistantMessage",
    "DeepSeekReasoning",
    "ImagePart",
    "JsonPart",
    "Message",
    "OpenAIReasoning",
    "Reasoning",
    "Repair",
    "ReplayInputError",
    "SanitizeResult",
    "SystemMessage",
    "TextPart",
    "ToolCall",
    "ToolResult",
    "Unanswered",
    "UserMessage",
    "build_request",
    "from_instatic_rows",
    "from_stored_messages",
    "load_instatic_file",
    "read_instatic_json",
    "read_instatic_table",
    "sanitize",
]
