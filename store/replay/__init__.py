"""Replay: a provider-valid request from any stored history, with a repair report.

``build_request(messages, "anthropic")`` sanitizes canonical messages (see ``readers`` to get
them from stored rows) and formats them for one provider; it returns the body fields and
the list of repairs. ``Store.replay`` returns the same for the store's own history, formatted
straight from its rows when the sanitizer would change nothing (``fast``).
"""

from __future__ import annotations

from .model import (
    AnthropicRedactedThinking,
    AnthropicThinking,
    DeepSeekReasoning,
    ImagePart,
    JsonPart,
    Message,
    OpenAIReasoning,
    Reasoning,
    ReplayAssistantMessage,
    ReplayToolCall,
    ReplayToolResult,
    SystemMessage,
    TextPart,
    UserMessage,
)
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
from .request import PROVIDERS, build_request
from .sanitize import SanitizeResult, sanitize

__all__ = [
    "PROVIDERS",
    "REPAIR_KINDS",
    "AnthropicRedactedThinking",
    "AnthropicThinking",
    "DeepSeekReasoning",
    "ImagePart",
    "JsonPart",
    "Message",
    "OpenAIReasoning",
    "Reasoning",
    "Repair",
    "ReplayAssistantMessage",
    "ReplayInputError",
    "ReplayToolCall",
    "ReplayToolResult",
    "SanitizeResult",
    "SystemMessage",
    "TextPart",
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
