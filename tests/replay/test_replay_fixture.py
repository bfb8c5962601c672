"""The bricked Instatic conversation from the bug report (positions 88..93 as reported)."""

from __future__ import annotations

import json

import pytest

from store.replay import (
    PROVIDERS,
    Message,
    ReplayAssistantMessage,
    ReplayToolResult,
    UserMessage,
    build_request,
    load_instatic_file,
    sanitize,
)

from .rules import CHECKERS, call_ids, pair_counts
from .sources import FIXTURE

ORPHANS = {(90, "call_37ac"), (91, "call_dc2b"), (92, "call_a9df")}


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    return load_instatic_file(FIXTURE)


@pytest.fixture(scope="module")
def stored_call_ids() -> list[str]:
    rows = json.loads(FIXTURE.read_text())["rows"]
    return [
        block["toolCallId"]
        for row in rows
        for block in row["content_json"]
        if block["kind"] == "toolCall"
    ]


def test_fixture_is_as_reported(messages: list[Message], stored_call_ids: list[str]) -> None:
    assert len(stored_call_ids) == 32
    assert sum(isinstance(m, ReplayToolResult) for m in messages) == 35


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_raw_fixture_breaks_every_provider(provider: str, messages: list[Message]) -> None:
    """Formatted without the sanitizer, every checker finds what the providers reported."""
    assert CHECKERS[provider](PROVIDERS[provider](messages)) != []


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("unanswered", ["synthesize", "drop"])
def test_fixture_is_accepted_and_keeps_all_32_pairs(
    provider: str, unanswered: str, messages: list[Message], stored_call_ids: list[str]
) -> None:
    body, _ = build_request(messages, provider, unanswered=unanswered)  # type: ignore[arg-type]
    assert CHECKERS[provider](body) == []
    assert pair_counts(provider, body) == (32, 32)
    if provider != "gemini":
        assert call_ids(provider, body) == stored_call_ids


def test_fixture_repairs_are_the_orphans_the_double_submit_and_row_grouping(
    messages: list[Message],
) -> None:
    result = sanitize(messages)
    orphans = {(r.position, r.call_id) for r in result.repairs if r.kind == "orphan_result"}
    assert orphans == ORPHANS
    duplicates = [r for r in result.repairs if r.kind == "duplicate_user"]
    assert [(r.position, r.call_id) for r in duplicates] == [(89, None)]
    others = {r.kind for r in result.repairs} - {"orphan_result", "duplicate_user"}
    assert others == {"grouped_rows"}
    kept_results = [m for m in result.messages if isinstance(m, ReplayToolResult)]
    assert len(kept_results) == 32
    assert not any(m.is_error for m in kept_results)
    assert not {m.call_id for m in kept_results} & {call_id for _, call_id in ORPHANS}


def test_fixture_keeps_every_user_text_once(messages: list[Message]) -> None:
    result = sanitize(messages)
    users_in = [m for m in messages if isinstance(m, UserMessage)]
    users_out = [m for m in result.messages if isinstance(m, UserMessage)]
    assert {m.parts for m in users_out} == {m.parts for m in users_in}
    assert len(users_out) == len(users_in) - 1  # only the double submit at 89 is gone
    assert [m.position for m in users_out][-2:] == [88, 93]


def test_fixture_steps_are_grouped_into_parallel_calls(messages: list[Message]) -> None:
    result = sanitize(messages)
    steps = [m for m in result.messages if isinstance(m, ReplayAssistantMessage) and m.tool_calls]
    assert [len(m.tool_calls) for m in steps] == [1, 3] * 8
    body, _ = build_request(messages, "openai-chat")
    parallel = [m for m in body["messages"] if len(m.get("tool_calls") or []) == 3]
    assert len(parallel) == 8
    assert all(m["content"] is None for m in parallel)
