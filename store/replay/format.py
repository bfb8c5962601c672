"""What every provider format implements: a request body built one message at a time.

Each provider has one ``Format`` subclass, in its own module, and each body shape is
spelled there once. A format is fed in one of two ways:

- ``add(message)``: any canonical message. The general path (``build_request``) feeds it
  the sanitizer's output.
- ``user_texts`` / ``assistant_texts`` / ``result_texts``: the plain values of one of the
  store's rows whose parts are all text and whose calls carry no provider data. The fast
  path for the store's own history (``fast``) feeds these, so that a long history is
  formatted without building a message object per row; it passes any other row to
  ``add``. Both ways end in the same private builders of the format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from .model import (
    Message,
    Reasoning,
    ReplayAssistantMessage,
    ReplayToolResult,
    SystemMessage,
    UserMessage,
)

#: One call of a plain row: (id, name, arguments), the arguments as the format asked for
#: them (``Format.arguments_as_text``): the stored JSON text, or the decoded object, which
#: belongs to the format (it need not copy it).
PlainCall = tuple[str, str, Any]


class Format(ABC):
    """One provider's request body, under construction."""

    #: True: calls reach ``assistant_texts`` with their arguments as JSON text (the OpenAI
    #: formats send a string, so the stored text passes through undecoded); False: decoded.
    arguments_as_text: ClassVar[bool]
    #: The kinds of reasoning this provider takes back; any other is left out of its body
    #: (and reported: ``foreign_reasoning``).
    takes_reasoning: ClassVar[tuple[type, ...]] = ()

    @classmethod
    def foreign_reasoning(cls, message: ReplayAssistantMessage) -> list[Reasoning]:
        """The reasoning of ``message`` that this provider does not take back."""
        return [r for r in message.reasoning if not isinstance(r, cls.takes_reasoning)]

    @classmethod
    def of(cls, messages: Sequence[Message]) -> dict[str, Any]:
        """The body for sanitized ``messages``."""
        built = cls()
        for message in messages:
            built.add(message)
        return built.body()

    def add(self, message: Message) -> None:
        if isinstance(message, UserMessage):
            self.user(message)
        elif isinstance(message, ReplayAssistantMessage):
            self.assistant(message)
        elif isinstance(message, ReplayToolResult):
            self.result(message)
        else:
            self.system(message)

    @abstractmethod
    def system(self, message: SystemMessage) -> None: ...

    @abstractmethod
    def user(self, message: UserMessage) -> None: ...

    @abstractmethod
    def assistant(self, message: ReplayAssistantMessage) -> None: ...

    @abstractmethod
    def result(self, message: ReplayToolResult) -> None: ...

    @abstractmethod
    def user_texts(self, texts: list[str]) -> None:
        """A user message whose parts are these texts (blank ones included)."""

    @abstractmethod
    def assistant_texts(self, texts: list[str], calls: list[PlainCall]) -> None:
        """An assistant message with these text parts and calls, and no reasoning."""

    @abstractmethod
    def result_texts(self, call_id: str, name: str, texts: list[str], is_error: bool) -> None:
        """A tool result whose content parts are these texts."""

    @abstractmethod
    def body(self) -> dict[str, Any]:
        """The request body fields, once every message was added."""
