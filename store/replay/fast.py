"""Replay of the store's own rows, straight to a provider body: the fast path.

History the store wrote has the shape the sanitizer produces, by construction (the
database refuses anything else): each assistant row is followed by the tool rows of its
calls, each holding one call and its result, and call ids are unique. On such history the
sanitizer changes nothing, so this path skips it, and builds no message object for a row
whose parts are all text: it hands the row's plain values to the provider's ``Format``.

It checks, as it goes, every condition under which the sanitizer would change something
(the output shape in ``sanitize``): the first row that fails one sends the whole history
down the general path (``build_request``), so the result is always what the general path
returns for the same rows. The one repair store-written history commonly needs, a
``last N`` window that starts on a step (material before the first user message, which
providers refuse), is reported by the sanitizer run on those leading rows alone: they are
whole steps with call ids of their own, so nothing after them depends on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .format import Format
from .model import ReplayAssistantMessage, SystemMessage, UserMessage, has_text, is_empty_user
from .pairing import Unanswered, check_unanswered
from .repair import Repair
from .request import build_request, foreign_reasoning, format_for
from .rows import ARGUMENTS, CALL_DATA, CALL_ID, CALLS, IS_ERROR, ROLE, TOOL_NAME, Row, StoredRows
from .sanitize import sanitize


def replay_rows(
    rows: Sequence[Row],
    provider: str,
    *,
    unanswered: Unanswered = "synthesize",
    system: str | None = None,
) -> tuple[dict[str, Any], list[Repair]]:
    """What ``build_request`` returns for the canonical messages of ``rows`` (the
    ``replay`` query's columns, in position order): the body fields and the repairs."""
    format_ = format_for(provider)
    check_unanswered(unanswered)
    history = StoredRows(rows)
    start = history.first_user()
    # Rows are read in order, as the general path reads them, so that an unreadable row
    # fails the same way on both paths.
    leading = history.messages(start)
    out = format_()
    if system:
        out.system(SystemMessage(system))
    formatting = _Pass(history, out)
    body = formatting.body(start)
    if body is None:
        return build_request(history.messages(), provider, unanswered=unanswered, system=system)
    repairs = list(sanitize(leading, unanswered=unanswered).repairs) if leading else []
    return body, repairs + formatting.repairs


class _Pass:
    """One pass over the rows, adding each message to ``out``; any method returning False
    or None means the sanitizer would change that row, and the pass is abandoned."""

    def __init__(self, history: StoredRows, out: Format) -> None:
        self.history = history
        self.rows = history.rows
        self.out = out
        self.arguments = history.argument_texts if out.arguments_as_text else history.arguments
        self.seen: set[str] = set()  # the call ids so far
        self.repairs: list[Repair] = []  # reasoning this provider does not take, left out
        self.previous = ""  # the role of the last message added ("tool": a step's results)

    def body(self, start: int) -> dict[str, Any] | None:
        """The body of the rows from ``start`` (the first user row, if any) on. The rows
        before it must be whole steps: they are left out."""
        index = 0
        while index < start:
            calls = self._calls(index)
            if calls is None:
                return None
            index += 1 + calls
        while index < len(self.rows):
            if self.rows[index][ROLE] == "user":
                if not self._user(index):
                    return None
                self.previous = "user"
                index += 1
                continue
            calls = self._calls(index)
            if calls is None or not self._assistant(index, calls):
                return None
            self._results(index + 1, index + 1 + calls)
            self.previous = "tool" if calls else "assistant"
            index += 1 + calls
        return self.out.body()

    def _calls(self, index: int) -> int | None:
        """How many calls the assistant row at ``index`` made, if it is one and the rows
        after it are that many tool rows, each with a new call id, a name and arguments."""
        row = self.rows[index]
        if row[ROLE] != "assistant":
            return None  # a tool row outside a step, or an unknown role
        calls: int = row[CALLS] or 0
        tools = self.rows[index + 1 : index + 1 + calls]
        if len(tools) != calls:
            return None
        for tool in tools:
            call_id = tool[CALL_ID]
            if (
                tool[ROLE] != "tool"
                or not isinstance(call_id, str)
                or not call_id
                or call_id in self.seen
                or not isinstance(tool[TOOL_NAME], str)
                or not isinstance(tool[ARGUMENTS], str)
            ):
                return None
            self.seen.add(call_id)
        return calls

    def _user(self, index: int) -> bool:
        """Add a user row, unless it is empty or repeats the user message directly before
        it (a double submit): the sanitizer drops those."""
        texts = _texts(self.history.contents[index])
        if texts is None:
            message = self.history.message(index)
            assert isinstance(message, UserMessage)
            if is_empty_user(message):
                return False
            self.out.add(message)
        elif any(t.strip() for t in texts):
            self.out.user_texts(texts)
        else:
            return False
        return self.previous != "user" or not self._same_parts(index - 1, index)

    def _assistant(self, index: int, calls: int) -> bool:
        """Add an assistant row, unless it has neither text nor calls, or it directly
        follows another assistant message and the two do not both carry reasoning: the
        sanitizer drops the first kind and merges the second."""
        if self.previous == "assistant" and not self._both_reason(index - 1, index):
            return False
        tools = range(index + 1, index + 1 + calls)
        texts = _texts(self.history.contents[index])
        if texts is None or any(self.rows[tool][CALL_DATA] is not None for tool in tools):
            message = self.history.message(index)
            assert isinstance(message, ReplayAssistantMessage)
            if not calls and not has_text(message.parts):
                return False
            self.repairs += foreign_reasoning([message], type(self.out))
            self.out.add(message)
            return True
        if not calls and not any(t.strip() for t in texts):
            return False
        self.out.assistant_texts(
            texts,
            [(self.rows[t][CALL_ID], self.rows[t][TOOL_NAME], self.arguments[t]) for t in tools],
        )
        return True

    def _results(self, start: int, stop: int) -> None:
        """Add the tool rows of a step: each is the result of its own call."""
        for index in range(start, stop):
            texts = _texts(self.history.contents[index])
            if texts is None:
                self.out.add(self.history.message(index))
            else:
                row = self.rows[index]
                self.out.result_texts(row[CALL_ID], row[TOOL_NAME], texts, bool(row[IS_ERROR]))

    def _same_parts(self, first: int, second: int) -> bool:
        one, other = self.history.message(first), self.history.message(second)
        assert isinstance(one, UserMessage) and isinstance(other, UserMessage)
        return one.parts == other.parts

    def _both_reason(self, first: int, second: int) -> bool:
        one, other = self.history.message(first), self.history.message(second)
        assert isinstance(one, ReplayAssistantMessage) and isinstance(other, ReplayAssistantMessage)
        return bool(one.reasoning and other.reasoning)


def _texts(content: Any) -> list[str] | None:
    """The texts of a row's content if all its parts are text parts (most rows), else
    None."""
    if type(content) is not list:
        return None
    texts = []
    for part in content:
        text = part.get("text") if type(part) is dict and part.get("type") == "text" else None
        if type(text) is not str:
            return None
        texts.append(text)
    return texts
