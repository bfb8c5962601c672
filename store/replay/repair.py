"""What the sanitizer changed: one ``Repair`` per change, naming the row and the call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Every kind the sanitizer reports, with what it means.
REPAIR_KINDS: dict[str, str] = {
    "hoisted_system": "a system message after the start was moved to the front",
    "grouped_rows": "consecutive assistant rows of one model step became one message",
    "orphan_result": "a tool result with no tool call anywhere before it was dropped",
    "duplicate_result": "a second result for an already answered call was dropped",
    "moved_result": "a result separated from its call (or before it) was moved after the call",
    "reordered_results": "a step's results were put in the order of its calls",
    "renamed_result": "a result's tool name was set to the name of the call it answers",
    "duplicate_call": "a repeated identical call with no result of its own was dropped",
    "renamed_call_id": "a reused call id was made unique (its result follows it)",
    "closed_unanswered_call": "a call with no result got a synthetic 'interrupted' error result",
    "dropped_unanswered_call": "a call with no result was dropped (unanswered='drop')",
    "dropped_reasoning": "reasoning was dropped together with the calls it produced",
    "foreign_reasoning": "reasoning recorded for another provider was left out of this body",
    "moved_text": "assistant text between a call and its result was moved after the results",
    "dropped_empty": "a message with nothing to send (no text, image or call) was dropped",
    "dropped_leading": "non-user material before the first user message was dropped",
    "duplicate_user": "an identical, directly repeated user message (double submit) collapsed",
    "merged_assistant": "consecutive assistant messages were merged into one",
}


@dataclass(frozen=True, slots=True)
class Repair:
    """One change: its ``kind`` (a key of ``REPAIR_KINDS``), the source ``position`` of the
    message it concerns (``None`` if it had none), the tool ``call_id`` if any, and a
    human-readable ``detail``."""

    kind: str
    position: int | None
    call_id: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "position": self.position,
            "call_id": self.call_id,
            "detail": self.detail,
        }
