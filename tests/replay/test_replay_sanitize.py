"""The sanitizer, one repair at a time."""

from __future__ import annotations

import pytest

from store.messages import INTERRUPTED
from store.replay import (
    PROVIDERS,
    REPAIR_KINDS,
    OpenAIReasoning,
    ReplayAssistantMessage,
    ReplayToolResult,
    SystemMessage,
    TextPart,
    UserMessage,
    build_request,
    sanitize,
)
from store.replay.sanitize import SanitizeResult

from .builders import asst, call, res, user
from .rules import CHECKERS

RS1 = OpenAIReasoning("rs_1", "enc1", ("looked",))
RS2 = OpenAIReasoning("rs_2", "enc2", ())


def kinds(result: SanitizeResult) -> list[tuple[str, int | None, str | None]]:
    return [(r.kind, r.position, r.call_id) for r in result.repairs]


def assert_accepted(result: SanitizeResult) -> None:
    for provider, formatter in PROVIDERS.items():
        assert CHECKERS[provider](formatter(result.messages)) == [], provider
    again = sanitize(result.messages)
    assert again.repairs == ()
    assert again.messages == result.messages


def test_orphan_result_is_dropped() -> None:
    result = sanitize([user("hi", 0), res("x", pos=1), user("more", 2)])
    assert kinds(result) == [("orphan_result", 1, "x")]
    assert result.messages == (user("hi", 0), user("more", 2))
    assert_accepted(result)


def test_second_result_for_a_call_is_dropped() -> None:
    result = sanitize(
        [user("hi", 0), asst(call("x"), pos=1), res("x", pos=2), res("x", "f", "2", 3)]
    )
    assert kinds(result) == [("duplicate_result", 3, "x")]
    assert result.messages == (user("hi", 0), asst(call("x"), pos=1), res("x", pos=2))
    assert_accepted(result)


def test_unanswered_call_is_closed_with_an_interrupted_error() -> None:
    result = sanitize(
        [user("hi", 0), asst(call("x"), call("y"), reasoning=(RS1,), pos=1), res("x", pos=2)]
    )
    assert kinds(result) == [("closed_unanswered_call", 1, "y")]
    assert result.messages[1] == asst(call("x"), call("y"), reasoning=(RS1,), pos=1)
    synthetic = result.messages[3]
    assert synthetic == ReplayToolResult("y", "f", (TextPart(INTERRUPTED),), True, None)
    assert_accepted(result)


def test_unanswered_call_is_dropped_with_its_reasoning_on_request() -> None:
    history = [user("hi", 0), asst(call("y"), reasoning=(RS1,), pos=1), user("again", 2)]
    result = sanitize(history, unanswered="drop")
    assert kinds(result) == [
        ("dropped_unanswered_call", 1, "y"),
        ("dropped_reasoning", 1, None),
        ("dropped_empty", 1, None),
    ]
    assert result.messages == (user("hi", 0), user("again", 2))
    assert_accepted(result)


def test_dropping_a_call_keeps_its_text_and_drops_the_reasoning() -> None:
    history = [user("hi", 0), asst(call("y"), text="trying", reasoning=(RS1,), pos=1)]
    result = sanitize(history, unanswered="drop")
    assert result.messages == (user("hi", 0), asst(text="trying", pos=1))
    assert [r.kind for r in result.repairs] == ["dropped_unanswered_call", "dropped_reasoning"]


def test_dropping_one_of_two_calls_keeps_the_reasoning() -> None:
    history = [user("hi", 0), asst(call("x"), call("y"), reasoning=(RS1,), pos=1), res("x", pos=2)]
    result = sanitize(history, unanswered="drop")
    assert result.messages[1] == asst(call("x"), reasoning=(RS1,), pos=1)
    assert kinds(result) == [("dropped_unanswered_call", 1, "y")]
    assert_accepted(result)


def test_single_call_rows_of_one_step_are_grouped() -> None:
    rows = [
        user("hi", 0),
        asst(text="Let me look.", pos=1),
        asst(call("x"), pos=2),
        asst(call("y"), pos=3),
        res("x", pos=4),
        res("y", pos=5),
    ]
    result = sanitize(rows)
    assert kinds(result) == [("grouped_rows", 1, None)]
    assert result.messages[1] == asst(call("x"), call("y"), text="Let me look.", pos=1)
    assert result.messages[2:] == (res("x", pos=4), res("y", pos=5))
    assert_accepted(result)


def test_text_between_a_call_and_its_result_moves_after_the_results() -> None:
    rows = [user("hi", 0), asst(call("x"), pos=1), asst(text="meanwhile", pos=2), res("x", pos=3)]
    result = sanitize(rows)
    assert kinds(result) == [("moved_text", 2, None)]
    assert result.messages == (
        user("hi", 0),
        asst(call("x"), pos=1),
        res("x", pos=3),
        asst(text="meanwhile", pos=2),
    )
    assert_accepted(result)


def test_result_separated_from_its_call_moves_back_to_it() -> None:
    rows = [user("hi", 0), asst(call("x"), pos=1), user("wait", 2), res("x", pos=3)]
    result = sanitize(rows)
    assert kinds(result) == [("moved_result", 3, "x")]
    assert result.messages == (
        user("hi", 0),
        asst(call("x"), pos=1),
        res("x", pos=3),
        user("wait", 2),
    )
    assert_accepted(result)


def test_result_stored_before_its_call_is_kept_not_replaced_by_an_error() -> None:
    rows = [user("hi", 0), res("x", pos=1), asst(call("x"), pos=2)]
    result = sanitize(rows)
    assert kinds(result) == [("moved_result", 1, "x")]
    assert result.messages == (user("hi", 0), asst(call("x"), pos=2), res("x", pos=1))
    assert_accepted(result)


def test_results_are_put_in_call_order() -> None:
    rows = [user("hi", 0), asst(call("x"), call("y"), pos=1), res("y", pos=2), res("x", pos=3)]
    result = sanitize(rows)
    assert kinds(result) == [("reordered_results", 1, None)]
    assert result.messages[2:] == (res("x", pos=3), res("y", pos=2))


def test_double_submitted_user_message_collapses_but_a_later_repeat_stays() -> None:
    result = sanitize(
        [user("build", 0), user("build", 1), asst(text="ok", pos=2), user("build", 3)]
    )
    assert kinds(result) == [("duplicate_user", 1, None)]
    assert result.messages == (user("build", 0), asst(text="ok", pos=2), user("build", 3))


def test_leading_non_user_material_is_dropped_never_a_user_invented() -> None:
    rows = [asst(call("x"), pos=0), res("x", pos=1), asst(text="hello", pos=2), user("hi", 3)]
    result = sanitize(rows)
    assert [(r.kind, r.position) for r in result.repairs] == [
        ("dropped_leading", 0),
        ("dropped_leading", 1),
        ("dropped_leading", 2),
    ]
    assert result.messages == (user("hi", 3),)


def test_history_without_user_messages_becomes_empty() -> None:
    result = sanitize([SystemMessage("sys", 0), asst(text="hello", pos=1)])
    assert result.messages == (SystemMessage("sys", 0),)
    assert kinds(result) == [("dropped_leading", 1, None)]
    assert_accepted(result)


def test_late_system_message_is_hoisted() -> None:
    result = sanitize([user("hi", 0), SystemMessage("sys", 1)])
    assert result.messages == (SystemMessage("sys", 1), user("hi", 0))
    assert kinds(result) == [("hoisted_system", 1, None)]


def test_reused_call_id_with_its_own_result_is_renamed() -> None:
    rows = [
        user("hi", 0),
        asst(call("x", a=1), pos=1),
        res("x", pos=2),
        user("again", 3),
        asst(call("x", a=2), pos=4),
        res("x", "f", "second", 5),
    ]
    result = sanitize(rows)
    assert kinds(result) == [("renamed_call_id", 4, "x")]
    assert result.messages[4] == asst(call("x_2", a=2), pos=4)
    assert result.messages[5] == res("x_2", "f", "second", 5)
    assert_accepted(result)


def test_repeated_identical_call_without_result_is_dropped_not_closed() -> None:
    rows = [user("hi", 0), asst(call("x"), pos=1), res("x", pos=2), asst(call("x"), pos=3)]
    result = sanitize(rows)
    assert kinds(result) == [("duplicate_call", 3, "x"), ("dropped_empty", 3, None)]
    assert result.messages == (user("hi", 0), asst(call("x"), pos=1), res("x", pos=2))


def test_assistant_messages_left_adjacent_are_merged() -> None:
    rows = [
        user("hi", 0),
        asst(text="first", pos=1),
        res("z", pos=2),
        asst(call("x"), pos=3),
        res("x", pos=4),
    ]
    result = sanitize(rows)
    assert kinds(result) == [("orphan_result", 2, "z"), ("merged_assistant", 3, None)]
    assert result.messages[1] == asst(call("x"), text="first", pos=1)
    assert_accepted(result)


def test_two_responses_with_their_own_reasoning_stay_apart() -> None:
    rows = [
        user("hi", 0),
        asst(text="thinking aloud", reasoning=(RS1,), pos=1),
        asst(call("x"), reasoning=(RS2,), pos=2),
        res("x", pos=3),
    ]
    result = sanitize(rows)
    assert result.repairs == ()
    assert result.messages == tuple(rows)
    body, _ = build_request(rows, "openai-responses")
    assert [i.get("type") for i in body["input"]] == [
        "message",
        "reasoning",
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]
    assert_accepted(result)


def test_blank_user_message_is_dropped() -> None:
    result = sanitize([user("hi", 0), user("  ", 1)])
    assert kinds(result) == [("dropped_empty", 1, None)]


def test_result_named_differently_from_its_call_takes_the_call_name() -> None:
    result = sanitize([user("hi", 0), asst(call("x", "f"), pos=1), res("x", "g", pos=2)])
    assert kinds(result) == [("renamed_result", 2, "x")]
    assert result.messages[2] == res("x", "f", pos=2)


def test_every_reported_kind_is_documented() -> None:
    rows: list[UserMessage | ReplayAssistantMessage | ReplayToolResult] = [
        res("q", pos=0),
        user("hi", 1),
        user("hi", 2),
        asst(call("x"), pos=3),
        asst(text="t", pos=4),
        asst(call("y"), pos=5),
    ]
    result = sanitize(rows)
    assert result.repairs
    assert {r.kind for r in result.repairs} <= set(REPAIR_KINDS)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unanswered"):
        sanitize([], unanswered="keep")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown provider"):
        build_request([], "mistral")


def test_ids_reused_many_times_get_distinct_names() -> None:
    rows = [user("hi", 0)]
    for i in range(4):
        rows += [asst(call("x", i=i), pos=2 * i + 1), res("x", pos=2 * i + 2)]
    rows += [asst(call("x_3"), pos=9), res("x_3", pos=10)]
    result = sanitize(rows)
    ids = [
        c.id for m in result.messages if isinstance(m, ReplayAssistantMessage) for c in m.tool_calls
    ]
    assert ids == ["x", "x_2", "x_4", "x_5", "x_3"]
    assert_accepted(result)


def test_rows_that_are_not_replay_messages_are_refused() -> None:
    with pytest.raises(TypeError, match="replay model messages"):
        sanitize([{"role": "user", "content": "hi"}])  # type: ignore[list-item]
