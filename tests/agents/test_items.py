"""Every kind of Responses input item the SDK produces comes back from ``get_items`` equal to
what was added, on both backends; function calls are paired tool rows and the rest is kept
as it came; ``store.replay`` reads a session's conversation for every provider."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from store import hooks
from store.checker import check
from store.integrations.agents_items import RowContent, restore

from .helpers import MakeSession

PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"

USER_INPUT: list[dict[str, Any]] = [
    {"role": "user", "content": 'Plain text, with unicode: こんにちは 😊 and "quotes"'},
    {"type": "message", "role": "user", "content": "typed easy message"},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Look at these"},
            {"type": "input_image", "image_url": PNG, "detail": "high"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
            {"type": "input_image", "file_id": "file_123", "detail": "low"},
            {"type": "input_file", "file_id": "file_456"},
            {
                "type": "input_file",
                "filename": "a.pdf",
                "file_data": "data:application/pdf;base64,JVBE",
            },
            {"type": "input_file", "file_url": "https://example.com/a.pdf"},
        ],
    },
]

STEP_ITEMS: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "Rules of the house"}],
        "status": "completed",
    },
    {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Thinking about it"}],
        "encrypted_content": "gAAAAABencrypted" * 20,
        "content": [{"type": "reasoning_text", "text": "raw chain"}],
        "status": "completed",
    },
    {"type": "reasoning", "summary": [], "encrypted_content": "no id: the omit policy"},
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {
                "type": "output_text",
                "text": "Here it is",
                "annotations": [
                    {
                        "type": "url_citation",
                        "start_index": 0,
                        "end_index": 4,
                        "url": "https://example.com",
                        "title": "Example",
                    }
                ],
                "logprobs": [
                    {"token": "Here", "logprob": -0.25, "bytes": [72], "top_logprobs": []}
                ],
            },
            {"type": "refusal", "refusal": "not that part"},
        ],
    },
    {"role": "assistant", "content": "an easy assistant message"},
    {
        "id": "fc_1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris", "days": 3}',
        "status": "completed",
    },
    {
        "type": "function_call",
        "call_id": "call_2",
        "name": "lookup",
        "namespace": "crm",
        "arguments": "not JSON at all",
    },
    {"type": "function_call_output", "call_id": "call_2", "output": "found"},
    {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": [
            {"type": "input_text", "text": "sunny"},
            {"type": "input_image", "image_url": PNG},
            {"type": "input_file", "file_id": "file_9"},
        ],
        "status": "completed",
    },
    {
        "id": "fs_1",
        "type": "file_search_call",
        "status": "completed",
        "queries": ["q"],
        "results": [
            {"file_id": "f", "filename": "a.txt", "score": 0.5, "text": "t", "attributes": {}}
        ],
    },
    {
        "id": "ws_1",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "weather"},
    },
    {
        "id": "cu_1",
        "type": "computer_call",
        "call_id": "call_cu",
        "action": {"type": "click", "button": "left", "x": 10, "y": 20},
        "pending_safety_checks": [],
        "status": "completed",
    },
    {
        "type": "computer_call_output",
        "call_id": "call_cu",
        "output": {"type": "computer_screenshot", "image_url": PNG},
        "acknowledged_safety_checks": [],
    },
    {
        "id": "ci_1",
        "type": "code_interpreter_call",
        "status": "completed",
        "code": "print(1 / 3)",
        "container_id": "cntr_1",
        "outputs": [{"type": "logs", "logs": "0.3333333333333333"}],
    },
    {"id": "ig_1", "type": "image_generation_call", "status": "completed", "result": "iVBORw0"},
    {
        "id": "ls_1",
        "type": "local_shell_call",
        "call_id": "call_ls",
        "status": "completed",
        "action": {"type": "exec", "command": ["ls", "-l"], "env": {"A": "1"}},
    },
    {"id": "ls_1", "type": "local_shell_call_output", "output": "total 0\n"},
    {
        "type": "shell_call",
        "call_id": "call_sh",
        "action": {"commands": ["ls"], "timeout_ms": 1000},
        "status": "completed",
    },
    {
        "type": "shell_call_output",
        "call_id": "call_sh",
        "output": [{"stdout": "a\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}],
    },
    {
        "type": "apply_patch_call",
        "call_id": "call_ap",
        "operation": {"type": "update_file", "path": "a.py", "diff": "@@ -1 +1 @@\n-a\n+b\n"},
        "status": "completed",
    },
    {
        "type": "apply_patch_call_output",
        "call_id": "call_ap",
        "status": "completed",
        "output": "ok",
    },
    {
        "id": "ml_1",
        "type": "mcp_list_tools",
        "server_label": "crm",
        "tools": [{"name": "find", "input_schema": {"type": "object"}, "annotations": None}],
    },
    {
        "id": "mr_1",
        "type": "mcp_approval_request",
        "server_label": "crm",
        "name": "delete",
        "arguments": '{"id": 7}',
    },
    {"type": "mcp_approval_response", "approval_request_id": "mr_1", "approve": True},
    {
        "id": "mc_1",
        "type": "mcp_call",
        "server_label": "crm",
        "name": "find",
        "arguments": "{}",
        "output": "[1, 2]",
        "error": None,
    },
    {"type": "custom_tool_call", "call_id": "call_ct", "name": "grammar", "input": "x = 1"},
    {"type": "custom_tool_call_output", "call_id": "call_ct", "output": "parsed"},
    {"type": "tool_search_call", "id": "ts_1", "call_id": "call_ts", "arguments": {"q": "x"}},
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "compacted history"},
    {"type": "item_reference", "id": "msg_1"},
    {"role": "assistant", "content": "numbers stay numbers", "extra": {"int": 2**62, "f": 0.1}},
]

FINAL = {
    "id": "msg_2",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "All done", "annotations": []}],
}


async def test_every_item_kind_comes_back_equal(sessions: MakeSession) -> None:
    session = sessions()
    added: list[dict[str, Any]] = []
    for item in USER_INPUT:  # as the Runner writes them: input, steps, the answer
        await session.add_items([item])
        added.append(item)
    await session.add_items(STEP_ITEMS)
    await session.add_items([FINAL])
    added += [*STEP_ITEMS, FINAL]
    assert await session.get_items() == added
    for n in (1, 3, 17, len(added)):
        assert await session.get_items(limit=n) == added[-n:]
    store = await session.get_store()
    report = await check(hooks.backend(store))
    assert report.ok, report.violations[:5]


async def test_every_item_kind_comes_back_equal_one_write_each(sessions: MakeSession) -> None:
    """Each item alone (a function call alone waits for its output: staged, then paired)."""
    session = sessions()
    everything = [*USER_INPUT, *STEP_ITEMS, FINAL]
    for item in everything:
        await session.add_items([item])
    assert await session.get_items() == everything


async def test_popping_every_item_returns_each_as_it_was_added(sessions: MakeSession) -> None:
    session = sessions()
    everything = [*USER_INPUT, *STEP_ITEMS, FINAL]
    await session.add_items(everything)
    popped = [await session.pop_item() for _ in everything]
    assert popped == list(reversed(everything))
    assert await session.pop_item() is None


async def test_replay_reads_a_sessions_conversation_for_every_provider(
    sessions: MakeSession,
) -> None:
    session = sessions()
    await session.add_items([*USER_INPUT, *STEP_ITEMS, FINAL])
    store = await session.get_store()
    for provider in ("openai-responses", "openai-chat", "anthropic", "gemini"):
        body, repairs = await store.replay("conv", provider)
        assert not [r for r in repairs if r.kind in ("orphan_result", "unanswered_call")]
        text = json.dumps(body)
        assert "get_weather" in text and "lookup" in text  # the function calls are there
    body, _ = await store.replay("conv", "openai-responses")
    calls = [i["call_id"] for i in body["input"] if i["type"] == "function_call"]
    outputs = [i["call_id"] for i in body["input"] if i["type"] == "function_call_output"]
    assert sorted(calls) == sorted(outputs) == ["call_1", "call_2"]
    assert any(i["type"] == "reasoning" and i["id"] == "rs_1" for i in body["input"])


# --- the codec alone ----------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    role=st.sampled_from(["user", "assistant", "tool"]),
    items=st.lists(st.dictionaries(st.sampled_from(["type", "role", "content", "output", "id",
                                                    "encrypted_content", "summary", "x"]),
                                   _json, max_size=5), min_size=1, max_size=4),
)  # fmt: skip
def test_any_json_item_comes_back_from_its_row(role: Any, items: list[dict[str, Any]]) -> None:
    row = RowContent(role)
    for order, item in enumerate(items):
        row.add(item, order)
    parts = json.loads(json.dumps(row.parts()))  # as a database gives them back
    entries = parts[0]["agents_items"]
    assert [restore(entry, parts) for entry in entries] == items
