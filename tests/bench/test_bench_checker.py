"""The checker on hand-made rows: each kind of corruption is found and counted, and a
well-formed history passes."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.checker import KINDS, CheckRow, Ledger, check
from benchmarks.readback import _agent_items

C = "conv-1"


def user(pos: int, text: str, conv: str = C) -> CheckRow:
    return CheckRow(conv, pos, "user", text)


def text(pos: int, token: str, conv: str = C) -> CheckRow:
    return CheckRow(conv, pos, "assistant", f"[{token}] working")


def call(pos: int, call_id: str, conv: str = C) -> CheckRow:
    return CheckRow(conv, pos, "assistant", None, (call_id,))


def result(pos: int, call_id: str, conv: str = C) -> CheckRow:
    return CheckRow(conv, pos, "tool", result_for=call_id)


T1 = "step-00000000000000a1"
T2 = "step-00000000000000a2"


def good_turn(start: int, prompt: str, token: str, ids: tuple[str, ...]) -> list[CheckRow]:
    rows = [user(start, prompt), text(start + 1, token)]
    rows += [call(start + 2 + i, c) for i, c in enumerate(ids)]
    rows += [result(start + 2 + len(ids) + i, c) for i, c in enumerate(ids)]
    return rows


def only(violations: dict[str, int], **expected: int) -> None:
    assert set(violations) == set(KINDS)
    assert {k: v for k, v in violations.items() if v} == expected


def test_well_formed_history_has_no_violation() -> None:
    rows = good_turn(0, "a", T1, ("call_1", "call_2")) + good_turn(6, "b", T2, ("call_3",))
    only(check(rows, Ledger([(C, T1), (C, T2)])))


def test_rows_are_ordered_by_position_not_by_list_order() -> None:
    rows = good_turn(0, "a", T1, ("call_1", "call_2"))
    only(check(list(reversed(rows)), Ledger([(C, T1)])))


def test_the_bug_report_tail() -> None:
    """positions 88..93 as reported: a double-submitted prompt, then three results whose
    calls were never stored."""
    rows = [
        user(88, "Build a single-page website"),
        user(89, "Build a single-page website"),
        result(90, "call_37ac"),
        result(91, "call_dc2b"),
        result(92, "call_a9df"),
        user(93, "you only did the hero section"),
    ]
    only(check(rows, Ledger()), orphan_results=3, duplicate_user_messages=1)


def test_unanswered_call() -> None:
    rows = [user(0, "a"), text(1, T1), call(2, "call_1"), call(3, "call_2"), result(4, "call_1")]
    only(check(rows, Ledger([(C, T1)])), unanswered_calls=1)


def test_result_after_a_later_message_is_misplaced() -> None:
    rows = [user(0, "a"), text(1, T1), call(2, "call_1"), user(3, "b"), result(4, "call_1")]
    only(check(rows, Ledger()), misplaced_results=1)


def test_interleaved_turns() -> None:
    """Two turns racing: A's calls, then B's text and calls, then A's results (B's block)."""
    rows = [
        user(0, "a"),
        text(1, T1),
        call(2, "call_a"),
        result(3, "call_a"),
        text(4, T2),
        call(5, "call_b"),
        result(6, "call_a"),  # answered twice, and not in this block
        result(7, "call_b"),
    ]
    only(check(rows, Ledger()), duplicate_results=1)
    rows2 = [
        user(0, "a"),
        text(1, T1),
        call(2, "call_a"),
        result(3, "call_b"),  # B's result before B's call: orphan
        text(4, T2),
        call(5, "call_b"),
        result(6, "call_a"),  # A's result in B's block: misplaced
    ]
    only(check(rows2, Ledger()), orphan_results=1, misplaced_results=1, unanswered_calls=1)


def test_duplicate_call_ids() -> None:
    rows = [user(0, "a"), text(1, T1), call(2, "call_1"), call(3, "call_1"), result(4, "call_1")]
    only(check(rows, Ledger()), duplicate_calls=1)


def test_lost_and_duplicated_steps_against_the_ledger() -> None:
    rows = [*good_turn(0, "a", T1, ("call_1",)), text(4, T1)]
    ledger = Ledger([(C, T1), (C, T2), ("conv-2", T1)])
    # T2 was never stored, T1 is stored twice, and conv-2 has no T1 (steps are per conversation)
    only(check(rows, ledger), lost_steps=2, duplicated_steps=1)


def test_position_gaps_and_zero_based_positions() -> None:
    rows = good_turn(0, "a", T1, ("call_1",))
    only(check(rows, Ledger()))
    gapped = [
        *rows[:2],
        *(
            CheckRow(r.conversation_id, r.position + 2, r.role, r.text, r.calls, r.result_for)
            for r in rows[2:]
        ),
    ]
    only(check(gapped, Ledger()), position_gaps=2)
    only(check(gapped, Ledger(), positions=False))


def test_conversations_are_checked_separately() -> None:
    rows = good_turn(0, "same prompt", T1, ("call_1",))
    rows += [user(0, "same prompt", "conv-2"), result(1, "call_1", "conv-2")]
    only(check(rows, Ledger()), orphan_results=1)


def test_agents_sdk_items_are_mapped_like_its_history() -> None:
    items = [
        {"role": "user", "content": "hello"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": f"[{T1}]"}],
        },
        {"type": "function_call", "call_id": "call_1", "name": "t", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "<p>ok</p>"},
        {"type": "function_call_output", "call_id": "call_9", "output": "<p>orphan</p>"},
        {"role": "user", "content": "hello"},
    ]
    rows = _agent_items((C, json.dumps(i)) for i in items)
    assert [r.role for r in rows] == ["user", "assistant", "assistant", "tool", "tool", "user"]
    assert [r.position for r in rows] == [1, 2, 3, 4, 5, 6]
    only(
        check(rows, Ledger([(C, T1)]), positions=False), orphan_results=1, duplicate_user_messages=1
    )


# the bug report's conversation, kept in the repository (the replay tests read it too)
FIXTURE = Path(__file__).parents[1] / "replay" / "data" / "instatic-bricked-conversation.json"


def test_the_bricked_conversation_fixture() -> None:
    """The real corrupted conversation: 35 results for 32 calls, the prompt at 88 and 89."""
    data = json.loads(FIXTURE.read_text())
    rows = []
    for r in data["rows"]:
        texts = [b["text"] for b in r["content_json"] if b.get("kind") == "text"]
        conv, pos, role, cid = r["conversation_id"], r["position"], r["role"], r["tool_call_id"]
        if role == "tool":
            rows.append(CheckRow(conv, pos, "tool", result_for=cid))
        else:
            rows.append(
                CheckRow(conv, pos, role, texts[0] if texts else None, (cid,) if cid else ())
            )
    only(check(rows, Ledger()), orphan_results=3, duplicate_user_messages=1)
