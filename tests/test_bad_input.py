"""Bad input is refused with InvalidMessage before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from store import AssistantMessage, InvalidMessage, Limits, Store, StoreConfig, ToolCall, ToolResult
from store.messages import encode_json
from store.turn import Turn

from .conftest import Target
from .helpers import count_rows, step


def _msg(*calls: ToolCall, content: Any = "") -> AssistantMessage:
    return AssistantMessage(content, calls)


BAD_STEPS: dict[str, Callable[[], tuple[AssistantMessage, list[ToolResult]]]] = {
    "result for an unknown call": lambda: (
        _msg(ToolCall("a", "t")),
        [ToolResult("a", "x"), ToolResult("zzz", "y")],
    ),
    "duplicate call ids": lambda: (
        _msg(ToolCall("a", "t"), ToolCall("a", "t")),
        [ToolResult("a", "x")],
    ),
    "second result for a call": lambda: (
        _msg(ToolCall("a", "t")),
        [ToolResult("a", "x"), ToolResult("a", "y")],
    ),
    "call without result": lambda: (
        _msg(ToolCall("a", "t"), ToolCall("b", "t")),
        [ToolResult("a", "x")],
    ),
    "empty call id": lambda: (_msg(ToolCall("", "t")), [ToolResult("", "x")]),
    "empty tool name": lambda: (_msg(ToolCall("a", "")), [ToolResult("a", "x")]),
    "over-long call id": lambda: (_msg(ToolCall("a" * 300, "t")), [ToolResult("a" * 300, "x")]),
    "NUL in text": lambda: (_msg(content="bad\x00text"), []),
    "NUL in call id": lambda: (_msg(ToolCall("a\x00", "t")), [ToolResult("a\x00", "x")]),
    "NUL in arguments": lambda: (_msg(ToolCall("a", "t", {"k": "v\x00"})), [ToolResult("a", "x")]),
    "NUL in result": lambda: (_msg(ToolCall("a", "t")), [ToolResult("a", "x\x00")]),
    "non-JSON arguments": lambda: (
        _msg(ToolCall("a", "t", {"k": object()})),
        [ToolResult("a", "x")],
    ),
    "NaN in arguments": lambda: (
        _msg(ToolCall("a", "t", {"k": float("nan")})),
        [ToolResult("a", "x")],
    ),
    "non-string key": lambda: (_msg(ToolCall("a", "t", {1: "x"})), [ToolResult("a", "x")]),
    "arguments not an object": lambda: (
        _msg(ToolCall("a", "t", ["x"])),  # type: ignore[arg-type]
        [ToolResult("a", "x")],
    ),
    "empty assistant message": lambda: (_msg(), []),
    "user part in assistant message": lambda: (_msg(content=[{"type": "image", "data": "x"}]), []),
    "unknown part type": lambda: (_msg(content=[{"type": "video"}]), []),
    "text part without text": lambda: (_msg(content=[{"type": "text"}]), []),
    "over-long payload": lambda: (_msg(ToolCall("a", "t")), [ToolResult("a", "x" * 5000)]),
    "not an assistant message": lambda: ("hello", []),  # type: ignore[return-value]
    "not a tool result": lambda: (_msg(ToolCall("a", "t")), [{"call_id": "a"}]),  # type: ignore[list-item]
}


@pytest.fixture
async def small_store(target: Target) -> Store:
    opened = await target.open(config=StoreConfig(limits=Limits(max_message_bytes=4096)))
    yield opened  # type: ignore[misc]
    await opened.close()


async def _started(store: Store) -> tuple[Turn, tuple[int, int]]:
    turn = await store.begin_turn("c", "go")
    await turn.commit_step(*step("ok"))
    return turn, await count_rows(store)


@pytest.mark.parametrize("case", sorted(BAD_STEPS))
async def test_bad_step_is_refused_and_nothing_is_written(small_store: Store, case: str) -> None:
    turn, before = await _started(small_store)
    message, results = BAD_STEPS[case]()
    with pytest.raises(InvalidMessage):
        await turn.commit_step(message, results)
    assert await count_rows(small_store) == before
    # the turn is still usable afterwards
    await turn.commit_step(*step("after"))


async def test_call_id_reused_from_an_earlier_step_is_refused(small_store: Store) -> None:
    turn, before = await _started(small_store)
    with pytest.raises(InvalidMessage, match="duplicate"):
        await turn.commit_step(*step("ok"))
    assert await count_rows(small_store) == before


async def test_call_id_reused_from_an_earlier_turn_is_refused(small_store: Store) -> None:
    turn, _ = await _started(small_store)
    await turn.finish()
    second = await small_store.begin_turn("c", "next")
    before = await count_rows(small_store)
    with pytest.raises(InvalidMessage, match="already used"):
        await second.commit_step(*step("ok"))
    assert await count_rows(small_store) == before
    await second.commit_step(*step("fresh"))


BAD_SUBMITS: dict[str, dict[str, Any]] = {
    "empty conversation id": {"conversation_id": "", "user_message": "x"},
    "conversation id not a string": {"conversation_id": 7, "user_message": "x"},
    "over-long conversation id": {"conversation_id": "c" * 300, "user_message": "x"},
    "empty user message": {"conversation_id": "c", "user_message": ""},
    "NUL in user message": {"conversation_id": "c", "user_message": "a\x00b"},
    "reasoning in a user message": {
        "conversation_id": "c",
        "user_message": [{"type": "reasoning", "text": "x"}],
    },
    "over-long user message": {"conversation_id": "c", "user_message": "x" * 5000},
    "empty idempotency key": {"conversation_id": "c", "user_message": "x", "idempotency_key": ""},
    "bad on_busy": {"conversation_id": "c", "user_message": "x", "on_busy": "maybe"},
}


@pytest.mark.parametrize("case", sorted(BAD_SUBMITS))
async def test_bad_submit_is_refused_and_nothing_is_written(small_store: Store, case: str) -> None:
    kwargs = dict(BAD_SUBMITS[case])
    cid, text = kwargs.pop("conversation_id"), kwargs.pop("user_message")
    with pytest.raises(InvalidMessage):
        await small_store.begin_turn(cid, text, **kwargs)
    assert await count_rows(small_store) == (0, 0)


async def test_bad_event_in_a_step_block_fails_where_it_is_given(small_store: Store) -> None:
    """The bad call raises where it is made and records nothing of itself. The exception
    leaves the block like any other: what the step had is kept (tests/test_step_refusals.py)
    and the turn ends failed."""
    turn, before = await _started(small_store)
    with pytest.raises(InvalidMessage):
        async with turn.step() as s:
            s.tool_call("x", "t", {"k": object()})
    assert await count_rows(small_store) == before  # the step had nothing
    assert turn.status == "failed"
    second = await small_store.begin_turn("c", "again")
    with pytest.raises(InvalidMessage):
        async with second.step() as s:
            s.tool_call("y", "t")
            s.tool_result("nope", "r")
    history = await small_store.history("c")
    assert [(m.role, m.tool_call_id, m.is_error) for m in history][-2:] == [
        ("assistant", None, False),
        ("tool", "y", True),  # closed as interrupted; no trace of "nope"
    ]
    assert second.status == "failed"


class _Text(str):
    pass


class _Object(dict[str, Any]):
    pass


NOT_JSON: dict[str, Any] = {
    "NUL in a value": {"html": "a\x00b"},
    "NUL in a key": {"a\x00": 1},
    "NUL deep in a list": {"rows": [[{"cell": "\x00"}]]},
    "NUL in a str subclass": {"html": _Text("\x00")},
    "NUL in a dict subclass": _Object(html="\x00"),
    "non-string key": {1: "one"},
    "non-string key in a dict subclass": _Object({2: "two"}),
    "NaN": {"x": [float("nan")]},
    "infinity": {"x": float("-inf")},
    "a set": {"x": {1, 2}},
    "bytes": {"x": b"raw"},
}


@pytest.mark.parametrize("case", sorted(NOT_JSON))
def test_what_json_cannot_hold_is_refused(case: str) -> None:
    with pytest.raises(InvalidMessage):
        encode_json(NOT_JSON[case], "arguments", Limits())


def test_json_values_of_every_kind_and_subclass_pass() -> None:
    value = {"s": _Text("ok"), "d": _Object(n=None), "l": [1, 2.5, True, ("t",)]}
    assert encode_json(value, "arguments", Limits()) == (
        '{"s":"ok","d":{"n":null},"l":[1,2.5,true,["t"]]}'
    )
