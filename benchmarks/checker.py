"""The independent checker: after each system's run, every stored message in position order,
judged against the provider pairing rules and against what the driver believes it committed.

Rows come in one canonical shape (``CheckRow``) whatever the system's tables look like. A
*block* is a maximal run of assistant rows; the results that follow it must answer calls of
that block (parallel calls may be stored as one assistant row per call, as in the Instatic
``ai_messages`` table, or as one row with several calls).

Violation kinds (counts):

- ``orphan_results``: a tool result whose call id no earlier assistant row issued.
- ``unanswered_calls``: a tool call with no result anywhere after it.
- ``misplaced_results``: a result for a call that exists but is not in the assistant block
  directly before the result (two turns interleaved, or a result after a later message).
- ``duplicate_results``: a second result for one call.
- ``duplicate_calls``: a call id issued twice.
- ``duplicate_user_messages``: extra copies of one user message in a conversation (a double
  submit stored twice; the driver makes every turn's text unique).
- ``lost_steps``: a step the driver saw commit that is not stored.
- ``duplicated_steps``: extra copies of one step.
- ``position_gaps``: missing positions between the lowest and the highest (systems that
  store a position).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Literal

STEP_TOKEN = re.compile(r"\bstep-[0-9a-f]{16}\b")

KINDS = (
    "orphan_results",
    "unanswered_calls",
    "misplaced_results",
    "duplicate_results",
    "duplicate_calls",
    "duplicate_user_messages",
    "lost_steps",
    "duplicated_steps",
    "position_gaps",
)


@dataclass(frozen=True, slots=True)
class CheckRow:
    """One stored message. ``position`` orders rows within a conversation; ``text`` is the
    user's or the assistant's text; ``calls`` the call ids an assistant row issues;
    ``result_for`` the call id a tool row answers."""

    conversation_id: str
    position: int
    role: Literal["user", "assistant", "tool"]
    text: str | None = None
    calls: tuple[str, ...] = ()
    result_for: str | None = None


@dataclass(slots=True)
class Ledger:
    """What the driver believes: the steps it saw commit, as (conversation, step token)."""

    committed_steps: list[tuple[str, str]] = field(default_factory=list)


def check(rows: Iterable[CheckRow], ledger: Ledger, *, positions: bool = True) -> dict[str, int]:
    """Count violations by kind (every kind present, zero or not). ``positions=False`` for
    systems whose order is not a stored position (their gaps are not counted)."""
    found: Counter[str] = Counter()
    totals: Counter[str] = Counter({k: 0 for k in KINDS})
    ordered = sorted(rows, key=lambda r: (r.conversation_id, r.position))
    for conv, conv_rows in groupby(ordered, key=lambda r: r.conversation_id):
        rs = list(conv_rows)
        totals.update(_check_conversation(rs, positions))
        for r in rs:
            if r.role == "assistant" and r.text:
                for token in STEP_TOKEN.findall(r.text):
                    found[f"{conv}\x00{token}"] += 1
    expected = {f"{c}\x00{t}" for c, t in ledger.committed_steps}
    totals["lost_steps"] += sum(1 for key in expected if found[key] == 0)
    totals["duplicated_steps"] += sum(n - 1 for n in found.values() if n > 1)
    return dict(totals)


def _check_conversation(rows: list[CheckRow], positions: bool) -> Counter[str]:
    out: Counter[str] = Counter()
    issued: set[str] = set()
    answered: set[str] = set()
    block: set[str] = set()
    prev_role: str | None = None
    users: Counter[str] = Counter()
    for r in rows:
        if r.role == "user":
            users[r.text or ""] += 1
            block = set()
        elif r.role == "assistant":
            if prev_role != "assistant":
                block = set()
            for c in r.calls:
                if c in issued:
                    out["duplicate_calls"] += 1
                issued.add(c)
                block.add(c)
        else:
            c = r.result_for or ""
            if c not in issued:
                out["orphan_results"] += 1
            elif c in answered:
                out["duplicate_results"] += 1
            else:
                answered.add(c)
                if c not in block:
                    out["misplaced_results"] += 1
        prev_role = r.role
    out["unanswered_calls"] += len(issued - answered)
    out["duplicate_user_messages"] += sum(n - 1 for n in users.values() if n > 1)
    if positions and rows:
        # dense from wherever the system starts counting (0 or 1)
        span = rows[-1].position - rows[0].position + 1
        out["position_gaps"] += span - len({r.position for r in rows})
    return out
