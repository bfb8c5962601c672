"""Property-based tests: random valid histories, randomly corrupted, and arbitrary soups."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.messages import INTERRUPTED
from store.replay import (
    PROVIDERS,
    REPAIR_KINDS,
    Message,
    ReplayAssistantMessage,
    ReplayToolCall,
    ReplayToolResult,
    TextPart,
    UserMessage,
    sanitize,
)

from .histories import Corrupted, corruptions, soups, valid_histories
from .rules import CHECKERS

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODES = st.sampled_from(["synthesize", "drop"])


def violations(messages: list[Message], unanswered: str) -> list[str]:
    result = sanitize(messages, unanswered=unanswered)  # type: ignore[arg-type]
    found: list[str] = []
    for provider, formatter in PROVIDERS.items():
        found += [f"{provider}: {v}" for v in CHECKERS[provider](formatter(result.messages))]
    return found


def pairs_in(
    messages: tuple[Message, ...],
) -> dict[str, tuple[ReplayAssistantMessage, ReplayToolResult]]:
    """Each call id in sanitized output, with its message and the result right after it."""
    found: dict[str, tuple[ReplayAssistantMessage, ReplayToolResult]] = {}
    for i, message in enumerate(messages):
        if isinstance(message, ReplayAssistantMessage):
            for k, call in enumerate(message.tool_calls):
                result = messages[i + 1 + k]
                assert isinstance(result, ReplayToolResult) and result.call_id == call.id
                found[call.id] = (message, result)
    return found


def expected_pairs(
    history: list[Message], corrupted: Corrupted
) -> list[tuple[ReplayAssistantMessage, ReplayToolCall, ReplayToolResult]]:
    """Pairs whose call and result rows no corruption touched and whose step is not left
    before every user message."""
    results = {m.call_id: i for i, m in enumerate(history) if isinstance(m, ReplayToolResult)}
    first_row = {}
    for row, tag in enumerate(corrupted.tags):
        first_row.setdefault(tag, row)
    users = [row for row, m in enumerate(corrupted.rows) if isinstance(m, UserMessage)]
    out = []
    for index, message in enumerate(history):
        if not isinstance(message, ReplayAssistantMessage) or index in corrupted.touched:
            continue
        if not users or users[0] > first_row[index]:
            continue
        for call in message.tool_calls:
            if results[call.id] not in corrupted.touched:
                result = history[results[call.id]]
                assert isinstance(result, ReplayToolResult)
                out.append((message, call, result))
    return out


@SETTINGS
@given(valid_histories())
def test_valid_history_needs_no_repair(history: list[Message]) -> None:
    result = sanitize(history)
    assert result.repairs == ()
    assert list(result.messages) == history
    assert violations(history, "synthesize") == []


@SETTINGS
@given(st.data(), MODES)
def test_corrupted_history_gives_bodies_every_provider_accepts(
    data: st.DataObject, mode: str
) -> None:
    history = data.draw(valid_histories())
    corrupted = data.draw(corruptions(history))
    assert violations(corrupted.rows, mode) == []


@SETTINGS
@given(soups(), MODES)
def test_any_soup_of_messages_gives_accepted_bodies(soup: list[Message], mode: str) -> None:
    assert violations(soup, mode) == []


@SETTINGS
@given(st.data(), MODES)
def test_sanitizing_is_idempotent(data: st.DataObject, mode: str) -> None:
    if data.draw(st.booleans()):
        messages = data.draw(soups())
    else:
        history = data.draw(valid_histories())
        messages = data.draw(corruptions(history)).rows
    once = sanitize(messages, unanswered=mode)  # type: ignore[arg-type]
    twice = sanitize(once.messages, unanswered=mode)  # type: ignore[arg-type]
    assert twice.repairs == ()
    assert twice.messages == once.messages


@SETTINGS
@given(st.data(), MODES)
def test_untouched_pairs_their_reasoning_and_all_user_texts_survive(
    data: st.DataObject, mode: str
) -> None:
    history = data.draw(valid_histories())
    corrupted = data.draw(corruptions(history))
    result = sanitize(corrupted.rows, unanswered=mode)  # type: ignore[arg-type]
    kept = pairs_in(result.messages)
    for message, call, stored in expected_pairs(history, corrupted):
        assert call.id in kept, f"pair {call.id} lost"
        holder, answer = kept[call.id]
        assert call in holder.tool_calls
        assert answer == stored
        if history.index(message) not in corrupted.split:  # one row: reasoning stays with calls
            assert all(item in holder.reasoning for item in message.reasoning)
    users_in = {m.parts for m in corrupted.rows if isinstance(m, UserMessage)}
    users_out = {m.parts for m in result.messages if isinstance(m, UserMessage)}
    assert users_out == users_in


@SETTINGS
@given(st.data(), MODES)
def test_every_change_is_reported(data: st.DataObject, mode: str) -> None:
    messages = data.draw(soups())
    result = sanitize(messages, unanswered=mode)  # type: ignore[arg-type]
    kinds = Counter(r.kind for r in result.repairs)
    assert set(kinds) <= set(REPAIR_KINDS)
    synthetic = [
        m
        for m in result.messages
        if isinstance(m, ReplayToolResult) and m.content == (TextPart(INTERRUPTED),) and m.is_error
    ]
    leading_synthetic = sum(
        1 for r in result.repairs if r.kind == "dropped_leading" and r.position is None
    )
    assert len(synthetic) == kinds["closed_unanswered_call"] - leading_synthetic
    if mode == "drop":
        assert not synthetic
    dropped_results = kinds["orphan_result"] + kinds["duplicate_result"]
    results_in = sum(isinstance(m, ReplayToolResult) for m in messages)
    results_out = sum(isinstance(m, ReplayToolResult) for m in result.messages) - len(synthetic)
    leading = sum(
        1 for r in result.repairs if r.kind == "dropped_leading" and r.call_id is not None
    )
    assert results_in - results_out == dropped_results + leading - leading_synthetic
