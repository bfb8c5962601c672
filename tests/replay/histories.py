"""Hypothesis strategies: valid canonical histories, corruptions of them, and arbitrary
message soups."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import strategies as st

from store.replay import (
    AnthropicRedactedThinking,
    AnthropicThinking,
    DeepSeekReasoning,
    ImagePart,
    JsonPart,
    Message,
    OpenAIReasoning,
    Reasoning,
    ReplayAssistantMessage,
    ReplayToolCall,
    ReplayToolResult,
    SystemMessage,
    TextPart,
    UserMessage,
)

WORDS = st.text(alphabet="abcxyz ", max_size=6)
REASONING_KINDS = ("openai", "deepseek", "anthropic", "redacted")


def _reasoning(kind: str, tag: str) -> Reasoning:
    if kind == "openai":
        return OpenAIReasoning(f"rs_{tag}", f"enc-{tag}", (f"summary {tag}",))
    if kind == "deepseek":
        return DeepSeekReasoning(f"thinking {tag}")
    if kind == "anthropic":
        return AnthropicThinking(f"thinking {tag}", f"sig-{tag}")
    return AnthropicRedactedThinking(f"redacted-{tag}")


@st.composite
def reasoning(draw: st.DrawFn, tag: str) -> tuple[Reasoning, ...]:
    kinds = draw(st.lists(st.sampled_from(REASONING_KINDS), max_size=2, unique=True))
    return tuple(_reasoning(kind, tag) for kind in kinds)


@st.composite
def result_content(draw: st.DrawFn, tag: str) -> tuple[TextPart | JsonPart, ...]:
    kind = draw(st.sampled_from(["text", "json", "empty"]))
    if kind == "text":
        return (TextPart(f"output {tag} {draw(WORDS)}"),)
    if kind == "json":
        return (JsonPart({"ok": True, "n": draw(st.integers(0, 9))}),)
    return ()


@st.composite
def valid_histories(draw: st.DrawFn) -> list[Message]:
    """A history as this store would write it: user turns, steps of 1..4 parallel calls each
    followed by its results, and an optional final text answer per turn."""
    out: list[Message] = []
    if draw(st.booleans()):
        out.append(SystemMessage("You build websites."))
    calls = 0
    for turn in range(draw(st.integers(1, 4))):
        parts: list[TextPart | ImagePart] = [TextPart(f"user {turn}: {draw(WORDS)}")]
        if draw(st.integers(0, 4)) == 0:
            parts.append(ImagePart("image/png", "aGVsbG8="))
        out.append(UserMessage(tuple(parts)))
        for _ in range(draw(st.integers(0, 3))):
            step: list[ReplayToolCall] = []
            for _ in range(draw(st.integers(1, 4))):
                calls += 1
                step.append(
                    ReplayToolCall(
                        f"call_{calls}",
                        draw(st.sampled_from(["insertHtml", "read_document"])),
                        {"n": calls, "html": draw(WORDS)},
                        draw(st.none() | st.just(f"sig_{calls}")),
                        draw(st.none() | st.just(f"fc_{calls}")),
                    )
                )
            text = draw(st.sampled_from(["", "Let me look."]))
            out.append(
                ReplayAssistantMessage(
                    (TextPart(text),) if text else (),
                    tuple(step),
                    draw(reasoning(step[0].id)),
                )
            )
            for call in step:
                out.append(
                    ReplayToolResult(
                        call.id, call.name, draw(result_content(call.id)), draw(st.booleans())
                    )
                )
        if draw(st.booleans()):
            out.append(
                ReplayAssistantMessage(
                    (TextPart(f"Done {turn}."),), (), draw(reasoning(f"t{turn}"))
                )
            )
    return [_at(message, position) for position, message in enumerate(out)]


def _at(message: Message, position: int) -> Message:
    return replace(message, position=position)


@dataclass(frozen=True)
class Corrupted:
    """Corrupted rows; ``tags[i]`` is the index in the valid history that row ``i`` came
    from (``None`` for a copy); ``touched`` are the indexes that an operation touched;
    ``split`` the assistant messages cut into one row per call."""

    rows: list[Message]
    tags: list[int | None]
    touched: frozenset[int]
    split: frozenset[int]


def split_rows(message: ReplayAssistantMessage) -> list[ReplayAssistantMessage]:
    """One row for the text and reasoning, then one row per call: the legacy shape."""
    head = ReplayAssistantMessage(message.parts, (), message.reasoning, message.position)
    calls = [ReplayAssistantMessage((), (c,), (), message.position) for c in message.tool_calls]
    return [head, *calls] if message.parts or message.reasoning else calls


@st.composite
def corruptions(draw: st.DrawFn, history: list[Message]) -> Corrupted:
    rows: list[tuple[int | None, Message]] = []
    split: set[int] = set()
    for index, message in enumerate(history):
        if (
            isinstance(message, ReplayAssistantMessage)
            and message.tool_calls
            and draw(st.booleans())
        ):
            rows.extend((index, row) for row in split_rows(message))
            split.add(index)
        else:
            rows.append((index, message))
    touched: set[int] = set()
    for _ in range(draw(st.integers(1, 4))):
        if not rows:
            break
        op = draw(st.sampled_from(["delete", "duplicate", "move", "swap"]))
        i = draw(st.integers(0, len(rows) - 1))
        tag, message = rows[i]
        if tag is not None:
            touched.add(tag)
        if op == "delete":
            del rows[i]
        elif op == "duplicate":
            rows.insert(draw(st.integers(0, len(rows))), (None, message))
        elif op == "move":
            del rows[i]
            rows.insert(draw(st.integers(0, len(rows))), (tag, message))
        elif i + 1 < len(rows):
            other = rows[i + 1][0]
            if other is not None:
                touched.add(other)
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
    return Corrupted(
        [m for _, m in rows], [t for t, _ in rows], frozenset(touched), frozenset(split)
    )


IDS = st.sampled_from(["a", "b", "c", "d"])
NAMES = st.sampled_from(["f", "g"])


@st.composite
def soups(draw: st.DrawFn) -> list[Message]:
    """Arbitrary messages from a small pool of ids: reused ids, orphans, blanks, mixed
    reasoning, misplaced system messages."""
    out: list[Message] = []
    for position in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["user", "assistant", "assistant", "tool", "tool", "system"]))
        if kind == "user":
            text = draw(st.sampled_from(["hi", "hi", " ", "again"]))
            out.append(UserMessage((TextPart(text),), position))
        elif kind == "system":
            out.append(SystemMessage("sys", position))
        elif kind == "tool":
            out.append(
                ReplayToolResult(
                    draw(IDS), draw(NAMES), draw(result_content("r")), draw(st.booleans()), position
                )
            )
        else:
            calls = draw(
                st.lists(
                    st.builds(
                        ReplayToolCall,
                        IDS,
                        NAMES,
                        st.fixed_dictionaries({"x": st.integers(0, 1)}),
                        st.none() | st.just("sig"),
                        st.none() | st.just("fc"),
                    ),
                    max_size=3,
                )
            )
            text = draw(st.sampled_from(["", " ", "ok"]))
            out.append(
                ReplayAssistantMessage(
                    (TextPart(text),) if text else (),
                    tuple(calls),
                    draw(reasoning(str(position))),
                    position,
                )
            )
    return out
