"""The provider formats by name, and the general path from canonical messages to a body."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .anthropic import Anthropic
from .format import Format
from .gemini import Gemini
from .model import Message, ReplayAssistantMessage, SystemMessage
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
    messages: Sequence[Message],
    provider: str,
    *,
    unanswered: Unanswered = "synthesize",
    system: str | None = None,
) -> tuple[dict[str, Any], list[Repair]]:
    """Sanitize ``messages`` and format them for ``provider`` (a key of ``PROVIDERS``).
    ``system``: the system prompt (instructions), sent first, in the provider's own place
    for it. Returns the request body fields and the repairs made."""
    format_ = format_for(provider)
    result = sanitize(messages, unanswered=unanswered)
    repairs = [*result.repairs, *foreign_reasoning(result.messages, format_)]
    repairs.sort(key=lambda r: (r.position is None, r.position or 0))
    out = [SystemMessage(system), *result.messages] if system else result.messages
    return format_.of(out), repairs


def foreign_reasoning(messages: Sequence[Message], format_: type[Format]) -> list[Repair]:
    """A repair for each assistant message whose reasoning ``format_`` does not take back
    (it was recorded for another provider): that reasoning is left out of the body."""
    repairs = []
    for message in messages:
        if isinstance(message, ReplayAssistantMessage):
            foreign = format_.foreign_reasoning(message)
            if foreign:
                kinds = sorted({type(r).__name__ for r in foreign})
                repairs.append(
                    Repair(
                        "foreign_reasoning",
                        message.position,
                        None,
                        f"{len(foreign)} reasoning item(s) for another provider "
                        f"({', '.join(kinds)}) left out",
                    )
                )
    return repairs
