"""``store.replay`` (the fast path, rows straight to a body) returns exactly what the general
path returns for the same history (``history`` -> ``from_stored_messages`` ->
``build_request``): the same JSON, the same repairs, for every provider, every window and
both ``unanswered`` modes, on both backends. Store-written history that the sanitizer
leaves alone never takes the general path."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from unittest import mock

import anyio
import anyio.lowlevel
import pytest

from store import AssistantMessage, Store, StoreConfig, ToolCall, ToolResult
from store.replay import PROVIDERS, Repair, build_request, fast
from store.replay.readers import from_stored_messages

from ..conftest import OpenStore
from .rules import CHECKERS

IMAGE = {"type": "image", "mime_type": "image/png", "data": "aGk="}


async def _interrupted_step(store: Store, conversation: str, prefix: str) -> None:
    """A turn whose step is cancelled after one of its two calls returned."""
    turn = await store.begin_turn(conversation, f"{prefix}: go on")
    with anyio.CancelScope() as scope:
        async with turn.step() as step:
            step.text("Working on it.")
            step.tool_call(f"{prefix}_c", "insertHtml", {"n": 1})
            step.tool_call(f"{prefix}_d", "insertHtml", {"n": 2})
            step.tool_result(f"{prefix}_c", "done")
            scope.cancel()
            await anyio.lowlevel.checkpoint()


async def write_rich(store: Store, conversation: str) -> None:
    """Everything a step can hold: reasoning in every format, images, JSON and image results,
    failed tools, provider data (Gemini thought signatures, Responses item ids), an
    interrupted step, tool-only and text-only steps."""
    turn = await store.begin_turn(conversation, [{"type": "text", "text": "Build a page"}, IMAGE])
    await turn.commit_step(
        AssistantMessage(
            [
                {
                    "type": "reasoning",
                    "format": "openai-responses",
                    "id": "rs_1",
                    "encrypted_content": "enc",
                    "summary": ["plan", {"text": "more"}],
                },
                {"type": "reasoning", "format": "deepseek", "text": "thinking"},
                {"type": "reasoning", "format": "anthropic", "thinking": "th", "signature": "s"},
                {"type": "reasoning", "format": "anthropic", "data": "redacted"},
                {"type": "reasoning", "format": "some-other-model", "text": "not replayed"},
                {"type": "text", "text": "Two tools."},
            ],
            [
                ToolCall("a1", "read", {}, provider_data={"thought_signature": "sig-a1"}),
                ToolCall(
                    "a2",
                    "insertHtml",
                    {"html": "<h1>é</h1>", "n": [1, 2.5, None]},
                    provider_data={"openai_item_id": "fc_a2"},
                ),
            ],
        ),
        [
            ToolResult("a1", [{"type": "json", "value": {"ok": True, "items": [1, 2]}}]),
            ToolResult("a2", "no such selector", is_error=True),
        ],
    )
    await turn.commit_step(
        AssistantMessage(
            "",
            [ToolCall("b1", "screenshot", {"full": True}), ToolCall("b2", "read", {"q": "x"})],
        ),
        [
            ToolResult("b1", [IMAGE, {"type": "text", "text": "the page"}]),
            ToolResult("b2", [{"type": "text", "text": "line 1"}, {"type": "text", "text": " "}]),
        ],
    )
    await turn.commit_step(
        AssistantMessage("Plain step.", [ToolCall("b3", "insertHtml", {"html": "<p>"})]),
        [ToolResult("b3", "")],
    )
    await turn.finish("Done: the page has a heading.")
    await _interrupted_step(store, conversation, "i1")
    turn = await store.begin_turn(conversation, "and a footer?")
    await turn.commit_step(
        AssistantMessage(
            [
                {"type": "reasoning", "format": "deepseek", "text": "hm"},
                {"type": "text", "text": "Sure."},
            ]
        ),
        [],
    )
    await turn.commit_step(
        AssistantMessage(
            [{"type": "reasoning", "format": "anthropic", "thinking": "again", "signature": "t"}],
            [ToolCall("f1", "insertHtml", {"html": "<footer>"})],
        ),
        [ToolResult("f1", "ok")],
    )
    await turn.finish()


async def write_odd(store: Store, conversation: str) -> None:
    """What the store accepts and the sanitizer still changes: a blank assistant message and
    a reasoning-only one (dropped), text steps in a row (grouped into one message), the same
    prompt twice in a row (collapsed)."""
    turn = await store.begin_turn(conversation, "first")
    await turn.commit_step(AssistantMessage([{"type": "text", "text": "  "}]), [])
    await turn.finish()
    turn = await store.begin_turn(conversation, "second")
    await turn.commit_step(
        AssistantMessage("One.", [ToolCall("o1", "f", {})]), [ToolResult("o1", "x")]
    )
    await turn.commit_step(AssistantMessage("Two."), [])
    await turn.finish("Three.")
    failed = await store.begin_turn(conversation, "again")
    await failed.fail("model unavailable")
    turn = await store.begin_turn(conversation, "again")
    await turn.finish(
        AssistantMessage([{"type": "reasoning", "format": "deepseek", "text": "only"}])
    )


WRITERS: dict[str, Callable[[Store, str], Awaitable[None]]] = {
    "rich": write_rich,
    "odd": write_odd,
}


def canonical(result: tuple[dict[str, Any], list[Repair]]) -> str:
    """A body and its repairs as JSON text: equal dicts can still differ here (``1`` and
    ``True``, key order), and a provider receives the text."""
    body, repairs = result
    return json.dumps([body, [r.to_dict() for r in repairs]], ensure_ascii=False)


async def general(
    store: Store, conversation: str, provider: str, last: int | None, unanswered: str
) -> tuple[dict[str, Any], list[Repair]]:
    history = await store.history(conversation, last=last)
    return build_request(from_stored_messages(history), provider, unanswered=unanswered)  # type: ignore[arg-type]


@pytest.fixture
async def quiet_store(open_store: OpenStore) -> Store:
    """A store that lets an identical prompt follow a failed turn at once."""
    return await open_store(config=StoreConfig(duplicate_window_seconds=0))


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_replay_equals_the_general_path(quiet_store: Store, provider: str) -> None:
    for name, write in WRITERS.items():
        await write(quiet_store, name)
        size = len(await quiet_store.history(name))
        for last in [None, -1, 0, *range(1, size + 2)]:
            for unanswered in ("synthesize", "drop"):
                fast_path = await quiet_store.replay(
                    name,
                    provider,
                    last=last,
                    unanswered=unanswered,
                )
                expected = await general(quiet_store, name, provider, last, unanswered)
                assert canonical(fast_path) == canonical(expected), (name, last, unanswered)
                assert CHECKERS[provider](fast_path[0]) == [], (name, last)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_store_written_history_never_takes_the_general_path(
    store: Store, provider: str
) -> None:
    await write_rich(store, "c")
    size = len(await store.history("c"))
    with mock.patch.object(fast, "build_request", side_effect=AssertionError("general path")):
        body, repairs = await store.replay("c", provider)
        # the history holds every provider's reasoning: the others' is left out, and said
        assert {r.kind for r in repairs} <= {"foreign_reasoning"}
        for last in range(1, size + 1):  # windows start on a turn: nothing else to repair
            _, repairs = await store.replay("c", provider, last=last)
            assert {r.kind for r in repairs} <= {"foreign_reasoning"}, last
    assert CHECKERS[provider](body) == []


async def test_the_odd_history_needs_the_general_path(quiet_store: Store) -> None:
    await write_odd(quiet_store, "odd")
    _, repairs = await quiet_store.replay("odd", "openai-chat")
    assert {r.kind for r in repairs} == {"dropped_empty", "grouped_rows", "duplicate_user"}


async def test_replay_of_a_missing_conversation_and_bad_arguments(store: Store) -> None:
    assert await store.replay("nobody", "gemini") == ({"contents": []}, [])
    with pytest.raises(ValueError, match="unknown provider"):
        await store.replay("nobody", "mistral")
    with pytest.raises(ValueError, match="unanswered"):
        await store.replay("nobody", "gemini", unanswered="keep")  # type: ignore[arg-type]
