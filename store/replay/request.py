"""The provider formats by name, and the general path from canonical messages to a body."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .anthropic import Anthropic
from .format import Format
from .gemini import Gemini
from .model import Message
from .openai_chat import OpenAIChat
from .openai_responses import OpenAIResponses
from .pairing import Unanswered
from .repair import Repair
from .sanitize import sanitize

Formatter = Callable[[Sequence[Message]], dict[str, Any]]

FORMATS: Mapping[str, type[Format]] = {
    "openai-chat": OpenAIChat,
    "openai-responses": OpenAIResponses,
    "anthropic": Anthropic,
    "gemini": Gemini,
}

#: Each provider's formatter: sanitized canonical messages to body fields.
PROVIDERS: Mapping[str, Formatter] = {name: f.of for name, f in FORMATS.items()}


def format_for(provider: str) -> type[Format]:
    """The format of ``provider`` (a key of ``PROVIDERS``); ValueError for any other name."""
    found = FORMATS.get(provider)
    if found is None:
        raise ValueError(f"unknown provider {provider!r}; choose one of {sorted(FORMATS)}")
    return found


def build_request(
    messages: Sequence[Message], provider: str, *, unanswered: Unanswered = "synthesize"
) -> tuple[dict[str, Any], list[Repair]]:
    """Sanitize ``messages`` and format them for ``provider`` (a key of ``PROVIDERS``).
    Returns the request body fields and the repairs made."""
    format_ = format_for(provider)
    result = sanitize(messages, unanswered=unanswered)
    return format_.of(result.messages), list(result.repairs)
