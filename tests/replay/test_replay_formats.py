"""Exact request bodies for one step with every kind of reasoning, per provider."""

from __future__ import annotations

import json
from typing import Any

import pytest

from store.replay import (
    PROVIDERS,
    AnthropicRedactedThinking,
    AnthropicThinking,
    DeepSeekReasoning,
    ImagePart,
    JsonPart,
    Message,
    OpenAIReasoning,
    ReplayAssistantMessage,
    ReplayToolCall,
    ReplayToolResult,
    SystemMessage,
    TextPart,
    UserMessage,
    build_request,
)

from .builders import asst, call, res, user
from .rules import CHECKERS

HISTORY: list[Message] = [
    SystemMessage("Be brief."),
    UserMessage((TextPart("Make a page"), ImagePart("image/png", "aGk=")), 0),
    ReplayAssistantMessage(
        (TextPart("Looking."),),
        (
            ReplayToolCall("call_1", "read_document", {}, "sig-1", "fc_1"),
            ReplayToolCall("call_2", "insertHtml", {"html": "<h1>"}, None, "fc_2"),
        ),
        (
            OpenAIReasoning("rs_1", "enc", ("plan",)),
            DeepSeekReasoning("ds"),
            AnthropicThinking("th", "sig"),
            AnthropicRedactedThinking("xx"),
        ),
        1,
    ),
    ReplayToolResult("call_1", "read_document", (JsonPart({"ok": True}),), False, 2),
    ReplayToolResult("call_2", "insertHtml", (TextPart("no such selector"),), True, 3),
    UserMessage((TextPart("and?"),), 4),
]
ARGS = '{"html":"<h1>"}'


def body(provider: str, history: list[Message] = HISTORY) -> dict[str, Any]:
    built, repairs = build_request(history, provider)
    assert {r.kind for r in repairs} <= {"foreign_reasoning"}  # the others' reasoning
    assert CHECKERS[provider](built) == []
    return built


def test_openai_chat() -> None:
    assert body("openai-chat") == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Make a page"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}},
                ],
            },
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read_document", "arguments": "{}"},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "insertHtml", "arguments": ARGS},
                    },
                ],
                "reasoning_content": "ds",
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok":true}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "Error: no such selector"},
            {"role": "user", "content": "and?"},
        ]
    }


def test_openai_chat_tool_only_message_sends_null_content() -> None:
    history = [user("hi", 0), asst(call("x"), reasoning=(DeepSeekReasoning("r"),), pos=1)]
    history += [res("x", pos=2), asst(text="done", reasoning=(DeepSeekReasoning("r2"),), pos=3)]
    messages = build_request(history, "openai-chat")[0]["messages"]
    assert messages[1]["content"] is None
    assert messages[1]["reasoning_content"] == "r"
    assert messages[3] == {"role": "assistant", "content": "done"}  # no reasoning w/o calls


def test_openai_responses() -> None:
    assert body("openai-responses") == {
        "input": [
            {"type": "message", "role": "system", "content": "Be brief."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Make a page"},
                    {"type": "input_image", "image_url": "data:image/png;base64,aGk="},
                ],
            },
            {"type": "message", "role": "assistant", "content": "Looking."},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "plan"}],
                "encrypted_content": "enc",
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "read_document",
                "arguments": "{}",
                "id": "fc_1",
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "insertHtml",
                "arguments": ARGS,
                "id": "fc_2",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"ok":true}'},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": "Error: no such selector",
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "and?"}],
            },
        ]
    }


def test_openai_responses_sends_item_ids_only_with_their_reasoning() -> None:
    history = [
        user("hi", 0),
        asst(ReplayToolCall("x", "f", {}, None, "fc_x"), pos=1),
        res("x", pos=2),
    ]
    items = body("openai-responses", history)["input"]
    assert items[1] == {"type": "function_call", "call_id": "x", "name": "f", "arguments": "{}"}


def test_anthropic() -> None:
    assert body("anthropic") == {
        "system": "Be brief.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Make a page"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "aGk="},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "th", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xx"},
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "call_1", "name": "read_document", "input": {}},
                    {
                        "type": "tool_use",
                        "id": "call_2",
                        "name": "insertHtml",
                        "input": {"html": "<h1>"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_1",
                        "is_error": False,
                        "content": [{"type": "text", "text": '{"ok":true}'}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "is_error": True,
                        "content": [{"type": "text", "text": "no such selector"}],
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    }


def test_gemini() -> None:
    assert body("gemini") == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Make a page"},
                    {"inlineData": {"mimeType": "image/png", "data": "aGk="}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Looking."},
                    {
                        "functionCall": {"name": "read_document", "args": {}},
                        "thoughtSignature": "sig-1",
                    },
                    {"functionCall": {"name": "insertHtml", "args": {"html": "<h1>"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "name": "read_document",
                            "response": {"output": {"ok": True}},
                        }
                    },
                    {
                        "functionResponse": {
                            "name": "insertHtml",
                            "response": {"error": "no such selector"},
                        }
                    },
                    {"text": "and?"},
                ],
            },
        ],
    }


def _scribble(value: Any) -> None:
    """Edit every dict and list inside a body, as a caller might."""
    if isinstance(value, dict):
        for item in list(value.values()):
            _scribble(item)
        value["scribbled"] = True
    elif isinstance(value, list):
        for item in value:
            _scribble(item)
        value.append("scribbled")


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_editing_a_body_does_not_change_the_history(provider: str) -> None:
    expected = json.loads(json.dumps(body(provider)))
    _scribble(PROVIDERS[provider](HISTORY))
    assert PROVIDERS[provider](HISTORY) == expected
