"""The sanitizer: any history in, a history every provider accepts out, with a repair report.

Pure and deterministic. It never invents user content and never drops user text (only an
identical, directly repeated copy of a user message, or a message with no text at all) nor
a well-formed call/result pair. Its output is a fixed point: sanitizing it again repairs
nothing.

The output's shape: system messages first; then a user message; then user messages,
assistant messages and, directly after each assistant message with tool calls, exactly one
result per call in call order. Two assistant messages are adjacent only if both carry
reasoning (two model responses that must stay apart) and the first has no calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import (
    Message,
    ReplayAssistantMessage,
    ReplayToolResult,
    SystemMessage,
    UserMessage,
    has_text,
    is_empty_user,
)
from .pairing import (
    Step,
    Unanswered,
    Unit,
    check_unanswered,
    close_unanswered,
    final_call,
    final_result,
    match_results,
    rename_reused_ids,
    segment,
)
from .repair import Repair


@dataclass(frozen=True, slots=True)
class SanitizeResult:
    messages: tuple[Message, ...]
    repairs: tuple[Repair, ...]


def sanitize(
    messages: Sequence[Message], *, unanswered: Unanswered = "synthesize"
) -> SanitizeResult:
    """Repair ``messages`` so every provider format accepts them; report every change.

    ``unanswered``: close a call that has no result with a synthetic error result
    (``"synthesize"``, the default: the tool may have run) or drop it (``"drop"``), together
    with its reasoning once the message has no calls left.
    """
    check_unanswered(unanswered)
    repairs: list[Repair] = []
    systems, rest = _hoist_systems(messages, repairs)
    units = segment(rest, repairs)
    match_results(units, repairs)
    close_unanswered(units, unanswered, repairs)
    rename_reused_ids(units, repairs)
    out = _assemble(units, repairs)
    out = _drop_leading(out, repairs)
    out = _collapse_repeated_users(out, repairs)
    out = _merge_assistants(out, repairs)
    ordered = sorted(
        enumerate(repairs), key=lambda r: (r[1].position is None, r[1].position or 0, r[0])
    )
    return SanitizeResult((*systems, *out), tuple(r for _, r in ordered))


def _hoist_systems(
    messages: Sequence[Message], repairs: list[Repair]
) -> tuple[list[SystemMessage], list[Message]]:
    systems: list[SystemMessage] = []
    rest: list[Message] = []
    for message in messages:
        if not isinstance(
            message, SystemMessage | UserMessage | ReplayAssistantMessage | ReplayToolResult
        ):
            raise TypeError(
                f"sanitize takes replay model messages, got {type(message).__name__} "
                "(convert stored rows with store.replay.readers first)"
            )
        if isinstance(message, SystemMessage):
            if rest:
                repairs.append(
                    Repair("hoisted_system", message.position, None, "moved to the front")
                )
            systems.append(message)
        else:
            rest.append(message)
    return systems, rest


def _assemble(units: list[Unit], repairs: list[Repair]) -> list[Message]:
    """Emit each step with its results right after it, then its trailing text."""
    out: list[Message] = []
    for unit in units:
        if isinstance(unit, UserMessage):
            if is_empty_user(unit):
                repairs.append(Repair("dropped_empty", unit.position, None, "empty user message"))
            else:
                out.append(unit)
        elif isinstance(unit, Step):
            out.extend(_emit_step(unit, units, repairs))
    return out


def _emit_step(step: Step, units: list[Unit], repairs: list[Repair]) -> list[Message]:
    parts = tuple(p for row in step.rows for p in row.parts)
    reasoning = tuple(r for row in step.rows for r in row.reasoning)
    kept = [c for c in step.calls if not c.dropped]
    if step.calls and not kept and reasoning:
        repairs.append(
            Repair(
                "dropped_reasoning",
                step.position,
                None,
                f"{len(reasoning)} reasoning item(s) dropped with the calls they produced",
            )
        )
        reasoning = ()
    emitted: list[Message] = []
    if kept or has_text(parts):
        calls = tuple(final_call(c) for c in kept)
        emitted.append(ReplayAssistantMessage(parts, calls, reasoning, step.position))
    else:
        repairs.append(
            Repair("dropped_empty", step.position, None, "assistant message with no text or calls")
        )
    emitted.extend(_step_results(step, units, repairs))
    if step.trailing:
        for row in step.trailing:
            if has_text(row.parts):
                repairs.append(
                    Repair(
                        "moved_text",
                        row.position,
                        None,
                        f"text between the calls of the step at position {step.position} and "
                        "their results; moved after the results",
                    )
                )
        trailing = tuple(p for row in step.trailing for p in row.parts)
        if has_text(trailing):
            emitted.append(ReplayAssistantMessage(trailing, position=step.trailing[0].position))
        else:
            repairs.append(
                Repair("dropped_empty", step.trailing[0].position, None, "blank assistant text")
            )
    return emitted


def _step_results(step: Step, units: list[Unit], repairs: list[Repair]) -> list[ReplayToolResult]:
    block: list[int] = []
    index = step.unit + 1
    while index < len(units) and isinstance(units[index], ReplayToolResult):
        block.append(index)
        index += 1
    results: list[ReplayToolResult] = []
    in_block: list[int] = []
    for call in step.calls:
        if call.dropped:
            continue
        result = final_result(call)
        stored = call.result
        assert stored is not None
        if call.result_unit in block:
            in_block.append(call.result_unit)
        elif call.result_unit is not None and not call.moved:
            repairs.append(
                Repair(
                    "moved_result",
                    stored.position,
                    call.call.id,
                    f"result separated from its call (step at position {step.position}); "
                    "moved directly after it",
                )
            )
        if stored.name and stored.name != call.call.name:
            repairs.append(
                Repair(
                    "renamed_result",
                    stored.position,
                    call.call.id,
                    f"result named {stored.name!r} answers a call of {call.call.name!r}",
                )
            )
        results.append(result)
    if in_block != sorted(in_block):
        repairs.append(
            Repair(
                "reordered_results",
                step.position,
                None,
                "results put in the order of the calls",
            )
        )
    return results


def _drop_leading(out: list[Message], repairs: list[Repair]) -> list[Message]:
    first = next((i for i, m in enumerate(out) if isinstance(m, UserMessage)), len(out))
    for message in out[:first]:
        if isinstance(message, ReplayToolResult):
            repairs.append(
                Repair(
                    "dropped_leading",
                    message.position,
                    message.call_id,
                    "tool result before the first user message; dropped with its call",
                )
            )
        elif isinstance(message, ReplayAssistantMessage):
            ids = ", ".join(c.id for c in message.tool_calls) or "none"
            repairs.append(
                Repair(
                    "dropped_leading",
                    message.position,
                    None,
                    f"assistant message before the first user message (calls: {ids}); dropped",
                )
            )
    return out[first:]


def _collapse_repeated_users(out: list[Message], repairs: list[Repair]) -> list[Message]:
    kept: list[Message] = []
    for message in out:
        previous = kept[-1] if kept else None
        if (
            isinstance(message, UserMessage)
            and isinstance(previous, UserMessage)
            and previous.parts == message.parts
        ):
            repairs.append(
                Repair(
                    "duplicate_user",
                    message.position,
                    None,
                    f"identical to the user message at position {previous.position} directly "
                    "before it (double submit); collapsed",
                )
            )
            continue
        kept.append(message)
    return kept


def _merge_assistants(out: list[Message], repairs: list[Repair]) -> list[Message]:
    """Merge an assistant message into the one directly before it, unless both carry
    reasoning (then they are two model responses whose reasoning must stay apart)."""
    kept: list[Message] = []
    for message in out:
        previous = kept[-1] if kept else None
        if (
            isinstance(message, ReplayAssistantMessage)
            and isinstance(previous, ReplayAssistantMessage)
            and not (previous.reasoning and message.reasoning)
        ):
            assert not previous.tool_calls  # a message with calls is followed by its results
            kept[-1] = ReplayAssistantMessage(
                previous.parts + message.parts,
                message.tool_calls,
                previous.reasoning + message.reasoning,
                previous.position,
            )
            repairs.append(
                Repair(
                    "merged_assistant",
                    message.position,
                    None,
                    f"merged into the assistant message at position {previous.position}",
                )
            )
            continue
        kept.append(message)
    return kept
