"""The invariant checker: scans a database independently of the write path.

It reads the tables with two plain SELECTs and re-derives every invariant in Python, so a
bug in the write path (or in the schema's constraints) cannot hide from it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .backends.base import Backend

RUNNING = "running"


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    conversation_id: str
    detail: str
    position: int | None = None


@dataclass
class Report:
    conversations: int = 0
    messages: int = 0
    turns: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for v in self.violations:
            out[v.kind] += 1
        return dict(out)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "conversations": self.conversations,
            "messages": self.messages,
            "turns": self.turns,
            "violations_by_kind": self.counts(),
            "violations": [asdict(v) for v in self.violations],
        }


async def check(backend: Backend) -> Report:
    async with backend.read() as tx:
        messages = await tx.all("check_messages")
        turns = await tx.all("check_turns")
    report = Report(messages=len(messages), turns=len(turns))
    by_conversation: dict[str, list[Any]] = defaultdict(list)
    for row in messages:
        by_conversation[row.conversation_id].append(row)
    turns_by_conversation: dict[str, list[Any]] = defaultdict(list)
    for turn in turns:
        turns_by_conversation[turn.conversation_id].append(turn)
    report.conversations = len(set(by_conversation) | set(turns_by_conversation))
    for cid in sorted(set(by_conversation) | set(turns_by_conversation)):
        rows = by_conversation.get(cid, [])
        report.violations += _check_messages(cid, rows)
        report.violations += _check_turns(cid, turns_by_conversation.get(cid, []), rows)
    return report


def _check_messages(cid: str, rows: list[Any]) -> list[Violation]:
    out: list[Violation] = []

    def bad(kind: str, row: Any, detail: str) -> None:
        out.append(Violation(kind, cid, detail, row.position))

    seen_calls: set[str] = set()
    finished_turns: set[str] = set()
    current_turn: str | None = None
    open_step: tuple[int, int, int] | None = None  # (assistant position, calls, answered)
    for expected, row in enumerate(rows):
        if row.position != expected:
            bad("position_gap", row, f"expected position {expected}, found {row.position}")
        # Turns do not interleave: once another turn's messages start, a turn is over.
        if row.turn_id != current_turn:
            if row.turn_id in finished_turns:
                bad("interleaved_turns", row, f"turn {row.turn_id} resumes after another turn")
            if current_turn is not None:
                finished_turns.add(current_turn)
            current_turn = row.turn_id
        if row.role == "tool":
            if row.tool_call_id in seen_calls:
                bad("duplicate_result", row, f"second row for call {row.tool_call_id}")
            seen_calls.add(row.tool_call_id)
            if open_step is None or row.step_position != open_step[0]:
                bad(
                    "orphan_result",
                    row,
                    f"result for {row.tool_call_id} follows no call of its step",
                )
                continue
            start, calls, answered = open_step
            if row.position != start + answered + 1 or answered >= calls:
                bad("orphan_result", row, f"result for {row.tool_call_id} out of its step")
            open_step = (start, calls, answered + 1)
            continue
        out += _unanswered(cid, open_step)
        open_step = None
        if row.role == "assistant" and row.tool_call_count:
            open_step = (row.position, row.tool_call_count, 0)
    return out + _unanswered(cid, open_step)


def _unanswered(cid: str, step: tuple[int, int, int] | None) -> list[Violation]:
    """A violation if the step that just closed has fewer results than calls."""
    if step is None or step[2] >= step[1]:
        return []
    start, calls, answered = step
    return [
        Violation(
            "unanswered_call", cid, f"step at {start} has {calls} calls, {answered} results", start
        )
    ]


def _check_turns(cid: str, turns: list[Any], rows: list[Any]) -> list[Violation]:
    out: list[Violation] = []
    running = [t.id for t in turns if t.status == RUNNING]
    if len(running) > 1:
        out.append(Violation("several_running_turns", cid, f"running turns: {running}"))
    keys: dict[str, str] = {}
    for turn in turns:
        if turn.idempotency_key is None:
            continue
        if turn.idempotency_key in keys:
            out.append(Violation("duplicate_idempotency_key", cid, f"key {turn.idempotency_key!r}"))
        keys[turn.idempotency_key] = turn.id
    user_messages: dict[str, int] = defaultdict(int)
    steps: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        if row.role == "user":
            user_messages[row.turn_id] += 1
        else:
            steps[row.turn_id].add(row.step)
    for turn in turns:
        if turn.keeps_message and turn.status != "queued":
            out.append(
                Violation(
                    "pending_message_kept",
                    cid,
                    f"turn {turn.id} ({turn.status}) still holds the message it waited with",
                )
            )
        count = user_messages.get(turn.id, 0)
        expected = 0 if turn.status in ("queued", "refused") else 1
        if count != expected:
            out.append(
                Violation(
                    "user_message_count",
                    cid,
                    f"turn {turn.id} ({turn.status}) has {count} user messages, "
                    f"expected {expected}",
                )
            )
        if steps.get(turn.id, set()) != set(range(1, turn.steps + 1)):
            out.append(
                Violation(
                    "lost_or_extra_steps",
                    cid,
                    f"turn {turn.id} records {turn.steps} steps, history has "
                    f"{sorted(steps.get(turn.id, set()))}",
                )
            )
    return out
