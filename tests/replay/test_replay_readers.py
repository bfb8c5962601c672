"""Readers: Instatic JSON dumps, an Instatic table over SQLAlchemy, the store's history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from store.messages import StoredMessage
from store.messages import ToolCall as StoredCall
from store.replay import (
    AnthropicRedactedThinking,
    AnthropicThinking,
    DeepSeekReasoning,
    ImagePart,
    JsonPart,
    OpenAIReasoning,
    ReplayAssistantMessage,
    ReplayInputError,
    ReplayToolCall,
    ReplayToolResult,
    TextPart,
    UserMessage,
    build_request,
    from_stored_messages,
    load_instatic_file,
    read_instatic_json,
    read_instatic_table,
)

from .rules import CHECKERS
from .sources import FIXTURE, make_table


def row(position: int, role: str, blocks: Any, call_id: str | None = None) -> dict[str, Any]:
    return {
        "conversation_id": "c1",
        "position": position,
        "role": role,
        "content_json": blocks,
        "tool_call_id": call_id,
        "tool_name": "insertHtml" if call_id else None,
    }


# --- Instatic JSON -----------------------------------------------------------------------


def test_fixture_rows_become_one_message_each() -> None:
    messages = load_instatic_file(FIXTURE)
    assert len(messages) == 94
    assert [m.position for m in messages] == list(range(94))
    assert messages[0] == UserMessage((TextPart("Create a landing page for a bakery"),), 0)
    assert messages[2] == ReplayAssistantMessage(
        (), (ReplayToolCall("call_a4c1", "read_document", {}),), (), 2
    )
    assert messages[3] == ReplayToolResult(
        "call_a4c1", "read_document", (JsonPart({"ok": True}),), False, 3
    )
    assert messages[90] == ReplayToolResult(
        "call_37ac", "read_document", (JsonPart({"ok": True}),), False, 90
    )


def test_instatic_blocks_strings_errors_and_order() -> None:
    rows = [
        row(3, "tool", json.dumps([{"kind": "toolResult", "ok": False, "error": "boom"}]), "x"),
        row(
            1,
            "user",
            [
                {"kind": "text", "text": "look"},
                {"kind": "image", "mimeType": "image/png", "data": "aGk="},
            ],
        ),
        row(
            2,
            "assistant",
            [
                {
                    "kind": "toolCall",
                    "toolCallId": "x",
                    "toolName": "insertHtml",
                    "input": '{"a": 1}',
                }
            ],
            "x",
        ),
        row(4, "tool", [{"kind": "toolResult", "ok": False}], "y"),
        {
            **row(0, "user", [{"kind": "text", "text": "other conversation"}]),
            "conversation_id": "c2",
        },
    ]
    messages = read_instatic_json({"rows": rows}, conversation_id="c1")
    assert messages == [
        UserMessage((TextPart("look"), ImagePart("image/png", "aGk=")), 1),
        ReplayAssistantMessage((), (ReplayToolCall("x", "insertHtml", {"a": 1}),), (), 2),
        ReplayToolResult("x", "insertHtml", (TextPart("boom"),), True, 3),
        ReplayToolResult("y", "insertHtml", (JsonPart({"ok": False}),), True, 4),
    ]
    assert len(read_instatic_json(rows)) == 5  # a bare list, no filter


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rows": {}}, "rows"),
        ({"rows": [1]}, "not an object"),
        ({"rows": [row(0, "system", [])]}, "unknown role"),
        ({"rows": [row(0, "user", [{"kind": "video"}])]}, "unexpected content block kind"),
        ({"rows": [row(0, "user", "{not json")]}, "content_json is not JSON"),
        ({"rows": [row(0, "tool", [{"kind": "toolResult", "ok": True}])]}, "tool_call_id"),
        (
            {
                "rows": [
                    row(
                        0,
                        "assistant",
                        [{"kind": "toolCall", "toolCallId": "x", "toolName": "f", "input": [1]}],
                    )
                ]
            },
            "JSON object",
        ),
        ({"rows": [row(0, "assistant", [{"kind": "image", "data": "x"}])]}, "image"),
    ],
)
def test_unreadable_instatic_rows_are_refused(data: Any, message: str) -> None:
    with pytest.raises(ReplayInputError, match=message):
        read_instatic_json(data)


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ReplayInputError, match="cannot read"):
        load_instatic_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ReplayInputError, match="not JSON"):
        load_instatic_file(bad)


# --- Instatic table ----------------------------------------------------------------------


async def test_table_reader_matches_the_json_reader(tmp_path: Path) -> None:
    path = tmp_path / "instatic.db"
    make_table(path, "legacy_messages")
    url = f"sqlite+aiosqlite:///{path}"
    messages = await read_instatic_table(url, "conv_site_01", table="legacy_messages")
    assert messages == load_instatic_file(FIXTURE)
    assert await read_instatic_table(url, "nobody", table="legacy_messages") == []


async def test_table_reader_refuses_bad_names_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "instatic.db"
    make_table(path)
    with pytest.raises(ReplayInputError, match="not a table name"):
        await read_instatic_table(f"sqlite+aiosqlite:///{path}", "c", table="x; DROP TABLE y")
    missing = tmp_path / "missing.db"
    with pytest.raises(ReplayInputError, match="no SQLite database file"):
        await read_instatic_table(f"sqlite+aiosqlite:///{missing}", "c")
    assert not missing.exists()


# --- the store's own history -------------------------------------------------------------


def stored(position: int, role: str, content: list[dict[str, Any]], **kw: Any) -> StoredMessage:
    return StoredMessage("conv", position, role, content, "turn-1", 1, **kw)  # type: ignore[arg-type]


STORED = [
    stored(
        0,
        "user",
        [
            {"type": "text", "text": "hi"},
            {"type": "image", "mime_type": "image/png", "data": "aGk="},
        ],
    ),
    stored(
        1,
        "assistant",
        [
            {
                "type": "reasoning",
                "format": "openai-responses",
                "id": "rs_1",
                "encrypted_content": "enc",
                "summary": [{"type": "summary_text", "text": "plan"}],
            },
            {"type": "reasoning", "format": "deepseek", "text": "ds"},
            {"type": "reasoning", "format": "anthropic", "thinking": "th", "signature": "sig"},
            {"type": "reasoning", "format": "anthropic", "data": "redacted"},
            {"type": "reasoning", "format": "some-other-vendor", "blob": "x"},
            {"type": "text", "text": "Looking."},
        ],
        tool_calls=(
            StoredCall("c1", "read_document", {}, {"thought_signature": "ts1"}),
            StoredCall("c2", "insertHtml", {"html": "x"}, {"openai_item_id": "fc_2"}),
        ),
    ),
    stored(
        2,
        "tool",
        [{"type": "json", "value": {"ok": True}}],
        tool_call_id="c1",
        tool_name="read_document",
    ),
    stored(
        3,
        "tool",
        [{"type": "text", "text": "nope"}],
        tool_call_id="c2",
        tool_name="insertHtml",
        is_error=True,
    ),
]


def test_store_history_keeps_reasoning_and_provider_data() -> None:
    assert from_stored_messages(STORED) == [
        UserMessage((TextPart("hi"), ImagePart("image/png", "aGk=")), 0),
        ReplayAssistantMessage(
            (TextPart("Looking."),),
            (
                ReplayToolCall("c1", "read_document", {}, "ts1", None),
                ReplayToolCall("c2", "insertHtml", {"html": "x"}, None, "fc_2"),
            ),
            (
                OpenAIReasoning("rs_1", "enc", ("plan",)),
                DeepSeekReasoning("ds"),
                AnthropicThinking("th", "sig"),
                AnthropicRedactedThinking("redacted"),
            ),
            1,
        ),
        ReplayToolResult("c1", "read_document", (JsonPart({"ok": True}),), False, 2),
        ReplayToolResult("c2", "insertHtml", (TextPart("nope"),), True, 3),
    ]


def test_store_history_round_trips_into_every_provider() -> None:
    messages = from_stored_messages(STORED)
    bodies = {p: build_request(messages, p) for p in CHECKERS}
    for provider, (body, repairs) in bodies.items():
        assert {r.kind for r in repairs} <= {"foreign_reasoning"}, provider
        assert CHECKERS[provider](body) == [], provider
    chat = bodies["openai-chat"][0]["messages"][1]
    assert chat["reasoning_content"] == "ds"
    items = bodies["openai-responses"][0]["input"]
    assert items[2] == {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "plan"}],
        "encrypted_content": "enc",
    }
    assert [i.get("id") for i in items[3:5]] == [None, "fc_2"]
    blocks = bodies["anthropic"][0]["messages"][1]["content"]
    assert blocks[:2] == [
        {"type": "thinking", "thinking": "th", "signature": "sig"},
        {"type": "redacted_thinking", "data": "redacted"},
    ]
    parts = bodies["gemini"][0]["contents"][1]["parts"]
    assert parts[1] == {
        "functionCall": {"name": "read_document", "args": {}},
        "thoughtSignature": "ts1",
    }


def test_store_history_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ReplayInputError, match="tool_call_id"):
        from_stored_messages([stored(0, "tool", [])])
    with pytest.raises(ReplayInputError, match="without an id"):
        from_stored_messages(
            [stored(0, "assistant", [{"type": "reasoning", "format": "openai-responses"}])]
        )
