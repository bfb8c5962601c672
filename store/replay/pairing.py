"""Pairing, the sanitizer's first half: cut the history into steps and pair each tool
result with the call it answers.

A *step* is one model response: a run of consecutive assistant rows (legacy runtimes write
one row per tool call) merged into one message. A row that carries reasoning starts a new
step once the current one has calls or reasoning of its own. Text-only rows that come after
the step's first call (text written between a call and its result) are *trailing*: they are
moved after the step's results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ..messages import INTERRUPTED
from .model import (
    Message,
    ReplayAssistantMessage,
    ReplayToolCall,
    ReplayToolResult,
    TextPart,
    UserMessage,
)
from .repair import Repair

Unanswered = Literal["synthesize", "drop"]


def check_unanswered(unanswered: str) -> None:
    if unanswered not in ("synthesize", "drop"):
        raise ValueError(f"unanswered must be 'synthesize' or 'drop', got {unanswered!r}")


@dataclass(slots=True, eq=False)
class Call:
    call: ReplayToolCall
    step: Step
    result: ReplayToolResult | None = None
    result_unit: int | None = None  # index of the result's unit; None if synthesized
    moved: bool = False  # already reported as moved
    dropped: bool = False
    final_id: str = ""


@dataclass(slots=True, eq=False)
class Step:
    unit: int
    rows: list[ReplayAssistantMessage]
    trailing: list[ReplayAssistantMessage] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    @property
    def position(self) -> int | None:
        return self.rows[0].position

    def has_reasoning(self) -> bool:
        return any(row.reasoning for row in self.rows)

    def add(self, row: ReplayAssistantMessage) -> None:
        self.rows.append(row)
        self.calls.extend(Call(c, self, final_id=c.id) for c in row.tool_calls)


Unit = UserMessage | Step | ReplayToolResult


def segment(messages: Sequence[Message], repairs: list[Repair]) -> list[Unit]:
    """Cut non-system messages into units: user messages, steps and result rows."""
    units: list[Unit] = []
    current: Step | None = None
    for message in messages:
        if isinstance(message, ReplayAssistantMessage):
            if current is None or (
                message.reasoning and (current.calls or current.has_reasoning())
            ):
                current = Step(len(units), [])
                current.add(message)
                units.append(current)
            elif current.calls and not message.tool_calls:
                current.trailing.append(message)
            else:
                current.add(message)
        elif isinstance(message, UserMessage | ReplayToolResult):
            current = None
            units.append(message)
    for unit in units:
        if isinstance(unit, Step) and len(unit.rows) > 1:
            where = ", ".join(str(row.position) for row in unit.rows)
            repairs.append(
                Repair(
                    "grouped_rows",
                    unit.position,
                    None,
                    f"assistant rows at positions {where} are one step with "
                    f"{len(unit.calls)} tool call(s)",
                )
            )
    return units


def match_results(units: list[Unit], repairs: list[Repair]) -> None:
    """Pair every result with a call. First with the nearest unanswered call with its id
    before it; then a result still unpaired with the first unanswered call with its id
    after it (it was stored out of order). Other results are duplicates or orphans."""
    by_id: dict[str, list[Call]] = {}
    for unit in units:
        if isinstance(unit, Step):
            for call in unit.calls:
                by_id.setdefault(call.call.id, []).append(call)
    unpaired: list[int] = []
    for index, unit in enumerate(units):
        if not isinstance(unit, ReplayToolResult):
            continue
        before = [
            c for c in by_id.get(unit.call_id, []) if c.step.unit < index and c.result is None
        ]
        if before:
            _attach(before[-1], unit, index)
        else:
            unpaired.append(index)
    for index in unpaired:
        result = units[index]
        assert isinstance(result, ReplayToolResult)
        calls = by_id.get(result.call_id, [])
        after = [c for c in calls if c.step.unit > index and c.result is None]
        if after:
            _attach(after[0], result, index)
            after[0].moved = True
            repairs.append(
                Repair(
                    "moved_result",
                    result.position,
                    result.call_id,
                    f"result stored before its call (step at position {after[0].step.position}); "
                    "moved after the call",
                )
            )
        elif calls:
            repairs.append(
                Repair(
                    "duplicate_result",
                    result.position,
                    result.call_id,
                    "the call already has a result; this second result was dropped",
                )
            )
        else:
            repairs.append(
                Repair(
                    "orphan_result",
                    result.position,
                    result.call_id,
                    f"no tool call {result.call_id!r} ({result.name}) in the history; dropped",
                )
            )


def _attach(call: Call, result: ReplayToolResult, index: int) -> None:
    call.result = result
    call.result_unit = index


def close_unanswered(units: list[Unit], unanswered: Unanswered, repairs: list[Repair]) -> None:
    """Give each call with no result a synthetic error result, or drop it. A call that repeats
    an identical call with the same id (a duplicated row) is dropped in either mode."""
    calls = [c for u in units if isinstance(u, Step) for c in u.calls]
    order = {call: index for index, call in enumerate(calls)}
    same_id: dict[str, list[Call]] = {}
    for call in calls:
        same_id.setdefault(call.call.id, []).append(call)
    for index, call in enumerate(calls):
        if call.result is not None:
            continue
        if any(_twin(call, other, order[other] < index) for other in same_id[call.call.id]):
            call.dropped = True
            repairs.append(
                Repair(
                    "duplicate_call",
                    call.step.position,
                    call.call.id,
                    "repeats an identical call with the same id and has no result; dropped",
                )
            )
        elif unanswered == "synthesize":
            call.result = ReplayToolResult(
                call.call.id, call.call.name, (TextPart(INTERRUPTED),), is_error=True
            )
            repairs.append(
                Repair(
                    "closed_unanswered_call",
                    call.step.position,
                    call.call.id,
                    f"no result for {call.call.name!r}; closed with an 'interrupted' error result",
                )
            )
        else:
            call.dropped = True
            repairs.append(
                Repair(
                    "dropped_unanswered_call",
                    call.step.position,
                    call.call.id,
                    f"no result for {call.call.name!r}; the call was dropped",
                )
            )


def _twin(call: Call, other: Call, other_is_earlier: bool) -> bool:
    if other is call or other.dropped:
        return False
    if other.call.name != call.call.name or other.call.arguments != call.call.arguments:
        return False
    return other.result is not None or other_is_earlier


def rename_reused_ids(units: list[Unit], repairs: list[Repair]) -> None:
    """Make call ids unique: a later kept call reusing an id gets a suffix."""
    kept = [c for u in units if isinstance(u, Step) for c in u.calls if not c.dropped]
    taken = {c.call.id for c in kept}
    seen: set[str] = set()
    suffix: dict[str, int] = {}
    for call in kept:
        if call.call.id in seen:
            n = suffix.get(call.call.id, 2)
            while f"{call.call.id}_{n}" in taken:
                n += 1
            suffix[call.call.id] = n + 1
            call.final_id = f"{call.call.id}_{n}"
            taken.add(call.final_id)
            repairs.append(
                Repair(
                    "renamed_call_id",
                    call.step.position,
                    call.call.id,
                    f"id reused by an earlier call; renamed to {call.final_id!r}",
                )
            )
        seen.add(call.final_id)


def final_call(call: Call) -> ReplayToolCall:
    if call.final_id == call.call.id:
        return call.call
    return replace(call.call, id=call.final_id)


def final_result(call: Call) -> ReplayToolResult:
    """The call's result, with the call's (final) id and name."""
    result = call.result
    assert result is not None
    if result.call_id == call.final_id and result.name == call.call.name:
        return result
    return replace(result, call_id=call.final_id, name=call.call.name)
