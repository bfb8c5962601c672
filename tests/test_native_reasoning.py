"""Each provider's own reasoning shapes are accepted as they come, replayed to their own
provider, and reported (``foreign_reasoning``) where another provider's body leaves them
out; a system prompt goes where each provider takes it; a reused call id is named."""

from __future__ import annotations

from typing import Any

import pytest

from store import InvalidMessage, Store

from .replay.rules import CHECKERS

THINKING = {"type": "thinking", "thinking": "plan the page", "signature": "sig-anthropic"}
REDACTED = {"type": "redacted_thinking", "data": "opaque"}
OPENAI_ITEM = {
    "type": "reasoning",
    "id": "rs_1",
    "encrypted_content": "enc-openai",
    "summary": [{"type": "summary_text", "text": "plan"}],
}
GEMINI_PART = {"text": "plan", "thought": True, "thoughtSignature": "sig-gemini"}
DEEPSEEK = {"reasoning_content": "let me think"}


async def _one_step(store: Store, *reasoning: dict[str, Any]) -> None:
    turn = await store.begin_turn("c", "build the page")
    async with turn.step() as step:
        for part in reasoning:
            step.reasoning(part)
        step.text("inserting")
        step.tool_call("call_1", "insertHtml", {"html": "<h1>"}, provider_data={"item_id": "x"})
        step.tool_result("call_1", "ok")
    await turn.finish("done")


def _kinds(repairs: list[Any]) -> set[str]:
    return {r.kind for r in repairs}


async def test_anthropic_thinking_goes_back_to_anthropic(store: Store) -> None:
    await _one_step(store, THINKING, REDACTED)
    body, repairs = await store.replay("c", "anthropic")
    assert repairs == []
    assert body["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": "plan the page", "signature": "sig-anthropic"},
        {"type": "redacted_thinking", "data": "opaque"},
    ]
    assert CHECKERS["anthropic"](body) == []
    for other in ("openai-chat", "openai-responses", "gemini"):
        body, repairs = await store.replay("c", other)
        assert _kinds(repairs) == {"foreign_reasoning"}, other
        assert "AnthropicThinking" in repairs[0].detail
        assert "sig-anthropic" not in str(body)


async def test_openai_reasoning_items_go_back_to_responses(store: Store) -> None:
    await _one_step(store, OPENAI_ITEM)
    body, repairs = await store.replay("c", "openai-responses")
    assert repairs == []
    reasoning = [i for i in body["input"] if i.get("type") == "reasoning"]
    assert reasoning and reasoning[0]["id"] == "rs_1"
    assert reasoning[0]["encrypted_content"] == "enc-openai"
    body, repairs = await store.replay("c", "anthropic")
    assert _kinds(repairs) == {"foreign_reasoning"}


async def test_gemini_thought_signatures_go_back_to_gemini(store: Store) -> None:
    await _one_step(store, GEMINI_PART)
    body, repairs = await store.replay("c", "gemini")
    assert repairs == []
    parts = body["contents"][1]["parts"]
    assert parts[0] == {"text": "plan", "thought": True, "thoughtSignature": "sig-gemini"}
    assert CHECKERS["gemini"](body) == []
    _, repairs = await store.replay("c", "openai-chat")
    assert _kinds(repairs) == {"foreign_reasoning"}


async def test_deepseek_reasoning_content_goes_back_to_chat(store: Store) -> None:
    await _one_step(store, DEEPSEEK)
    body, repairs = await store.replay("c", "openai-chat")
    assert repairs == []
    assert body["messages"][1]["reasoning_content"] == "let me think"


async def test_reasoning_whose_provider_cannot_be_told_is_refused(store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    step = turn.step()
    with pytest.raises(InvalidMessage, match="cannot be told"):
        step.reasoning({"type": "reasoning", "text": "hmm"})
    with pytest.raises(InvalidMessage, match="signature"):
        step.reasoning({"type": "thinking", "thinking": "no signature"})
    await turn.finish()


@pytest.mark.parametrize(
    ("provider", "where"),
    [
        ("openai-chat", lambda b: b["messages"][0]),
        ("openai-responses", lambda b: b["input"][0]),
        ("anthropic", lambda b: b["system"]),
        ("gemini", lambda b: b["systemInstruction"]),
    ],
)
async def test_a_system_prompt_goes_where_the_provider_takes_it(
    store: Store, provider: str, where: Any
) -> None:
    await _one_step(store)
    body, repairs = await store.replay("c", provider, system="You build web pages.")
    assert repairs == []
    assert "You build web pages." in str(where(body))
    assert CHECKERS[provider](body) == []


async def test_a_reused_call_id_is_named(store: Store) -> None:
    await _one_step(store)
    turn = await store.begin_turn("c", "again")
    async with turn.step() as step:
        step.tool_call("call_9", "insertHtml", {})
        step.tool_result("call_9", "ok")
    with pytest.raises(InvalidMessage, match="'call_1' is already used"):
        async with turn.step() as step:
            step.tool_call("call_1", "insertHtml", {})  # reused from the first turn
            step.tool_result("call_1", "ok")
