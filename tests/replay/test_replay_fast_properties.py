"""Property: for any rows, the fast path (``replay_rows``) returns what the general path
returns for the same rows read as history (``decode_rows`` -> ``from_stored_messages`` ->
``build_request``), or fails with the same error; and on rows shaped as the store writes
them it never needs the general path. No database: rows are generated in the ``history``
query's columns, and the ``replay`` query's columns are picked from them."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.history import decode_rows
from store.replay import PROVIDERS, build_request, fast
from store.replay.readers import from_stored_messages

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = st.sampled_from(["synthesize", "drop"])
PROVIDER = st.sampled_from(sorted(PROVIDERS))

TEXT = st.sampled_from(["hi", "hi", "Let me look.", " ", ""]).map(
    lambda t: {"type": "text", "text": t}
)
IMAGE = st.sampled_from(
    [
        {"type": "image", "mime_type": "image/png", "data": "aGk="},
        {"type": "image", "url": "https://example.com/a.png"},
    ]
)
REASONING = st.sampled_from(
    [
        {"type": "reasoning", "format": "deepseek", "text": "thinking"},
        {"type": "reasoning", "format": "anthropic", "thinking": "th", "signature": "s"},
        {"type": "reasoning", "format": "anthropic", "data": "redacted"},
        {"type": "reasoning", "format": "openai-responses", "id": "rs_1", "summary": ["p"]},
        {"type": "reasoning", "format": "another-model", "text": "not replayed"},
    ]
)
JSON_PART = st.sampled_from([{"type": "json", "value": {"ok": True}}, {"type": "json", "data": 3}])
ODD = st.sampled_from([{"type": "video"}, {"type": "text", "text": 5}, {"type": "text"}])
CALL_DATA = st.sampled_from(
    [None, None, {"thought_signature": "sig"}, {"openai_item_id": "fc_1"}, {"x": 1}]
)
# PostgreSQL's jsonb::text puts spaces after separators; SQLite keeps the stored text.
SEPARATORS = st.sampled_from([(",", ":"), (", ", ": ")])


def history_row(
    position: int,
    role: str,
    content: list[Any],
    *,
    calls: int = 0,
    call_id: str | None = None,
    name: str | None = None,
    arguments: dict[str, Any] | None = None,
    call_data: dict[str, Any] | None = None,
    is_error: bool | int = False,
    separators: tuple[str, str] = (",", ":"),
) -> tuple[Any, ...]:
    """One row in the ``history`` query's columns, JSON as text."""

    def text(value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=separators)

    return (position, role, "turn", 0, calls, text(content), call_id, name, text(arguments),
            text(call_data), is_error, None)  # fmt: skip


def replay_columns(row: tuple[Any, ...]) -> tuple[Any, ...]:
    position, role, _, _, calls, content, call_id, name, arguments, data, is_error, _ = row
    return (position, role, calls, content, call_id, name, arguments, data, is_error)


@st.composite
def store_rows(draw: st.DrawFn, *, clean: bool) -> list[tuple[Any, ...]]:
    """Rows as the store writes them: each assistant row followed by one tool row per call,
    unique call ids. ``clean``: also nothing the sanitizer would change (no blank
    messages, no repeated prompt, no two assistant messages in a row)."""
    separators = draw(SEPARATORS)
    rows: list[tuple[Any, ...]] = []
    calls = 0
    for turn in range(draw(st.integers(1, 4))):
        parts = (
            [{"type": "text", "text": f"prompt {turn}"}]
            if clean
            else draw(st.lists(TEXT, max_size=2))
        )
        parts += draw(st.lists(IMAGE, max_size=1))
        rows.append(history_row(len(rows), "user", parts, separators=separators))
        steps = draw(st.integers(0, 3))
        for step in range(steps):
            content = draw(st.lists(TEXT | REASONING, max_size=3))
            count = draw(st.integers(1 if clean else 0, 3))
            final = clean and step == steps - 1 and draw(st.booleans())
            if final:  # a text answer ends the turn
                count, content = 0, [*content, {"type": "text", "text": "Done."}]
            rows.append(history_row(len(rows), "assistant", content, calls=count,
                                    separators=separators))  # fmt: skip
            for _ in range(count):
                calls += 1
                rows.append(
                    history_row(
                        len(rows),
                        "tool",
                        draw(st.lists(TEXT | IMAGE | JSON_PART, max_size=2)),
                        calls=count,
                        call_id=f"call_{calls}",
                        name=draw(st.sampled_from(["insertHtml", "read"])),
                        arguments={"n": calls, "html": "<p>é</p>"},
                        call_data=draw(CALL_DATA),
                        is_error=draw(st.sampled_from([False, True, 0, 1])),
                        separators=separators,
                    )
                )
    return rows


@st.composite
def soup_rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Arbitrary rows: announced call counts that do not match, reused and missing ids,
    stray results, odd parts."""
    rows: list[tuple[Any, ...]] = []
    for position in range(draw(st.integers(0, 10))):
        role = draw(st.sampled_from(["user", "assistant", "assistant", "tool", "tool", "x"]))
        content = draw(st.lists(TEXT | IMAGE | REASONING | JSON_PART | ODD, max_size=2))
        if role == "tool":
            rows.append(
                history_row(
                    position,
                    role,
                    content,
                    calls=draw(st.integers(0, 2)),
                    call_id=draw(st.sampled_from(["a", "a", "b", "", None])),
                    name=draw(st.sampled_from(["f", "g", None])),
                    arguments=draw(st.sampled_from([{"x": 1}, {}, None])),
                    call_data=draw(CALL_DATA),
                    is_error=draw(st.booleans()),
                )
            )
        else:
            calls = draw(st.integers(0, 3)) if role == "assistant" else 0
            rows.append(history_row(position, role, content, calls=calls))
    return rows


def window(rows: list[tuple[Any, ...]], start: int) -> list[tuple[Any, ...]]:
    """The rows from the ``start``-th user or assistant row on, as a ``last N`` read
    returns them (it never starts inside a step)."""
    starts = [i for i, row in enumerate(rows) if row[1] != "tool"] or [0]
    return rows[starts[start % len(starts)] :]


def outcome(call: Any) -> Any:
    """A body and its repairs as JSON text, or the error raised."""
    try:
        body, repairs = call()
    except Exception as exc:
        return (type(exc), str(exc))
    return json.dumps([body, [r.to_dict() for r in repairs]], ensure_ascii=False)


def assert_same(rows: list[tuple[Any, ...]], provider: str, unanswered: str) -> None:
    general = outcome(
        lambda: build_request(
            from_stored_messages(decode_rows("c", rows)),
            provider,
            unanswered=unanswered,  # type: ignore[arg-type]
        )
    )
    replayed = outcome(
        lambda: fast.replay_rows(
            [replay_columns(r) for r in rows],
            provider,
            unanswered=unanswered,  # type: ignore[arg-type]
        )
    )
    assert replayed == general


@SETTINGS
@given(store_rows(clean=False), st.integers(0, 50), PROVIDER, MODES)
def test_store_shaped_rows_replay_as_the_general_path(
    rows: list[tuple[Any, ...]], start: int, provider: str, unanswered: str
) -> None:
    assert_same(window(rows, start), provider, unanswered)


@SETTINGS
@given(soup_rows(), PROVIDER, MODES)
def test_any_rows_replay_as_the_general_path(
    rows: list[tuple[Any, ...]], provider: str, unanswered: str
) -> None:
    assert_same(rows, provider, unanswered)


@SETTINGS
@given(store_rows(clean=True), st.integers(0, 50), PROVIDER)
def test_clean_store_rows_never_take_the_general_path(
    rows: list[tuple[Any, ...]], start: int, provider: str
) -> None:
    rows = window(rows, start)
    with mock.patch.object(fast, "build_request", side_effect=AssertionError("general path")):
        _, repairs = fast.replay_rows([replay_columns(r) for r in rows], provider)
    assert {r.kind for r in repairs} <= {"dropped_leading", "foreign_reasoning"}
    assert_same(rows, provider, "synthesize")
