"""The store's own rows as replay reads them: the replay query's columns, their JSON decoded
once for all rows, and the canonical messages they hold (what ``from_stored_messages``
makes of the same rows read through ``Store.history``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from ..history import decode_json
from .model import Message, ReplayToolCall
from .readers import stored_call, stored_message

# The columns of the ``replay`` queries (schema/<dialect>/queries.sql), JSON as text.
POSITION, ROLE, CALLS, CONTENT, CALL_ID, TOOL_NAME, ARGUMENTS, CALL_DATA, IS_ERROR = range(9)
Row = Sequence[Any]


class StoredRows:
    """One conversation's rows (a ``last N`` window or all of it), in position order."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = rows
        self.contents = decode_json([row[CONTENT] for row in rows])

    @cached_property
    def argument_texts(self) -> list[str | None]:
        """The tool arguments of each row as stored (None but on tool rows)."""
        return [row[ARGUMENTS] for row in self.rows]

    @cached_property
    def arguments(self) -> list[Any]:
        """The tool arguments of each row, decoded (None but on tool rows)."""
        return decode_json(self.argument_texts)

    def first_user(self) -> int:
        """The index of the first user row (the number of rows if there is none)."""
        return next((i for i, row in enumerate(self.rows) if row[ROLE] == "user"), len(self.rows))

    def message(self, index: int) -> Message:
        """The canonical message of the row at ``index``. An assistant's calls are the tool
        rows that follow it, as many as it announced."""
        row = self.rows[index]
        calls: tuple[ReplayToolCall, ...] = ()
        if row[CALLS] and row[ROLE] == "assistant":
            end = min(index + 1 + row[CALLS], len(self.rows))
            calls = tuple(self._call(j) for j in range(index + 1, end))
        return stored_message(
            row[POSITION],
            row[ROLE],
            self.contents[index],
            calls,
            row[CALL_ID],
            row[TOOL_NAME],
            bool(row[IS_ERROR]),
        )

    def messages(self, stop: int | None = None) -> list[Message]:
        """The canonical messages of the rows before ``stop`` (all by default)."""
        return [self.message(i) for i in range(len(self.rows) if stop is None else stop)]

    def _call(self, index: int) -> ReplayToolCall:
        row = self.rows[index]
        data = row[CALL_DATA]
        return stored_call(
            row[CALL_ID],
            row[TOOL_NAME],
            self.arguments[index],
            None if data is None else json.loads(data),
            row[ARGUMENTS],
        )
