"""The records a backend takes and returns: a step to write, a turn's end, a claim's
inputs and the decision taken, what ending a turn did."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..messages import EncodedStep


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True, slots=True)
class StepWrite:
    """One validated step, ready to insert at ``position`` (the assistant message) and
    ``position + 1 ...`` (one tool row per call, in call order)."""

    lock_key: int
    conversation_id: str
    turn_id: str
    epoch: int
    lease_seconds: float
    step: int
    position: int
    content_json: str
    call_ids: Sequence[str]
    tool_names: Sequence[str]
    arguments_json: Sequence[str]
    call_data_json: Sequence[str | None]
    results_json: Sequence[str]
    is_error: Sequence[bool]

    @classmethod
    def of(
        cls,
        encoded: EncodedStep,
        *,
        lock_key: int,
        conversation_id: str,
        turn_id: str,
        epoch: int,
        lease_seconds: float,
        step: int,
        position: int,
    ) -> StepWrite:
        calls = encoded.calls
        return cls(
            lock_key=lock_key,
            conversation_id=conversation_id,
            turn_id=turn_id,
            epoch=epoch,
            lease_seconds=lease_seconds,
            step=step,
            position=position,
            content_json=encoded.content_json,
            call_ids=[c.id for c in calls],
            tool_names=[c.name for c in calls],
            arguments_json=[c.arguments_json for c in calls],
            call_data_json=[c.provider_data_json for c in calls],
            results_json=[r.content_json for r in encoded.results],
            is_error=[r.is_error for r in encoded.results],
        )

    def same_step(self, encoded: EncodedStep) -> bool:
        """Whether ``encoded`` is this step's content (one encoder wrote both: equal text)."""
        calls, results = encoded.calls, encoded.results
        return (
            self.content_json == encoded.content_json
            and list(self.call_ids) == [c.id for c in calls]
            and list(self.tool_names) == [c.name for c in calls]
            and list(self.arguments_json) == [c.arguments_json for c in calls]
            and list(self.call_data_json) == [c.provider_data_json for c in calls]
            and list(self.results_json) == [r.content_json for r in results]
            and list(self.is_error) == [r.is_error for r in results]
        )

    def matches_rows(self, rows: Sequence[Any]) -> bool:
        """Whether ``rows`` (the ``step_rows`` query at this step's positions) are this
        step as written: same turn, step, message, calls and results. JSON is compared as
        values (PostgreSQL's jsonb keeps neither key order nor spacing)."""
        if len(rows) != 1 + len(self.call_ids):
            return False
        head, tools = rows[0], rows[1:]
        if (head.role, head.turn_id, head.step, head.position) != (
            "assistant",
            self.turn_id,
            self.step,
            self.position,
        ) or _json(head.content) != _json(self.content_json):
            return False
        for i, row in enumerate(tools):
            if (
                row.role != "tool"
                or row.turn_id != self.turn_id
                or row.step != self.step
                or row.tool_call_id != self.call_ids[i]
                or row.tool_name != self.tool_names[i]
                or bool(row.is_error) != bool(self.is_error[i])
                or _json(row.content) != _json(self.results_json[i])
                or _json(row.tool_arguments) != _json(self.arguments_json[i])
                or _json(row.tool_call_data) != _json(self.call_data_json[i])
            ):
                return False
        return True

    def message_rows(self) -> list[dict[str, Any]]:
        """The rows of this step in the shape of the ``insert_message`` query."""
        calls = len(self.call_ids)
        common = {
            "conversation_id": self.conversation_id,
            "turn_id": self.turn_id,
            "step": self.step,
            "step_position": self.position,
            "tool_call_count": calls,
        }
        rows = [
            {
                **common,
                "position": self.position,
                "role": "assistant",
                "content": self.content_json,
                "tool_call_id": None,
                "tool_name": None,
                "tool_arguments": None,
                "tool_call_data": None,
                "is_error": False,
            }
        ]
        for i in range(calls):
            rows.append(
                {
                    **common,
                    "position": self.position + 1 + i,
                    "role": "tool",
                    "content": self.results_json[i],
                    "tool_call_id": self.call_ids[i],
                    "tool_name": self.tool_names[i],
                    "tool_arguments": self.arguments_json[i],
                    "tool_call_data": self.call_data_json[i],
                    "is_error": self.is_error[i],
                }
            )
        return rows


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """Ending a turn: its fencing token, the status and error, an optional last step, and
    the lease of the turn the conversation is handed over to (if one waits)."""

    lock_key: int
    conversation_id: str
    turn_id: str
    epoch: int
    status: str
    error: str | None
    final: StepWrite | None
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """The inputs of one claim decision (see ``store.claim``)."""

    lock_key: int
    conversation_id: str
    turn_id: str
    idempotency_key: str | None
    content_hash: str
    content_json: str
    owner: str
    lease_seconds: float
    window_seconds: float
    fail_when_busy: bool
    first: bool
    retry: bool


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """A claim decision taken by the database: 'claimed', 'duplicate', 'queued', 'busy',
    'key_reused' or 'recover' (take the general path)."""

    decision: str
    turn_id: str
    status: str | None
    epoch: int
    next_position: int | None


@dataclass(frozen=True, slots=True)
class Ended:
    """What ending a turn did. ``refused`` is None when the turn ended, else
    ``'<status>:<steps>'`` of the turn, and nothing was written. ``handed_to`` is the
    waiting turn that the conversation was handed over to, started in the same transaction
    (its user message written), if there was one."""

    refused: str | None
    handed_to: ClaimRow | None = None
