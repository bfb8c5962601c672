"""Tool-call pairing in a provider request body, checked independently of the replay code
(the rules each provider enforces with a 400): every call is answered once, right after
the message that made it; every result answers a call of the message before it.

``check(provider, body)`` returns a list of problems, empty when the body pairs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

Body = dict[str, Any]


def _openai_chat(body: Body) -> list[str]:
    errors: list[str] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ["'messages' is not a list"]
    seen: set[str] = set()
    pending: list[str] = []  # calls of the last assistant message not answered yet
    for i, m in enumerate(messages):
        if m.get("role") == "tool":
            call = m.get("tool_call_id")
            if call not in pending:
                errors.append(f"messages[{i}]: tool message {call} answers no pending call")
            else:
                pending.remove(call)
            continue
        if pending:
            errors.append(f"messages[{i}]: calls {pending} unanswered before this message")
        calls = (
            [c.get("id") for c in m.get("tool_calls") or []] if m.get("role") == "assistant" else []
        )
        for call in calls:
            if call in seen:
                errors.append(f"messages[{i}]: tool call id {call} used twice")
            seen.add(call)
        pending = list(calls)
    if pending:
        errors.append(f"calls {pending} unanswered at the end")
    return errors


def _openai_responses(body: Body) -> list[str]:
    errors: list[str] = []
    items = body.get("input")
    if not isinstance(items, list):
        return ["'input' is not a list"]
    calls: set[str] = set()
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        call = item.get("call_id")
        if kind == "function_call":
            if call in calls:
                errors.append(f"input[{i}]: function_call {call} twice")
            calls.add(call)
        elif kind == "function_call_output":
            if call not in calls:
                errors.append(f"input[{i}]: output for {call}, which no earlier call made")
            elif call in answered:
                errors.append(f"input[{i}]: second output for {call}")
            answered.add(call)
        elif kind == "message" and item.get("role") == "user" and calls - answered:
            errors.append(f"input[{i}]: calls {sorted(calls - answered)} unanswered before it")
    if calls - answered:
        errors.append(f"calls {sorted(calls - answered)} have no output")
    return errors


def _merged(messages: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive messages of one role merged into one turn, as Anthropic does."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for m in messages:
        content = m.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if turns and turns[-1][0] == m.get("role"):
            turns[-1][1].extend(blocks or [])
        else:
            turns.append((str(m.get("role")), list(blocks or [])))
    return turns


def _anthropic(body: Body) -> list[str]:
    errors: list[str] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ["'messages' is not a list"]
    turns = _merged(messages)
    if turns and turns[0][0] != "user":
        errors.append("the first message is not the user's")
    made: list[str | None] = []  # tool_use ids of the assistant turn before
    seen: set[str | None] = set()
    for n, (role, blocks) in enumerate(turns):
        if role == "assistant":
            if made:
                errors.append(f"turn {n}: tool_use {made} not answered by the next turn")
            made = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
            for call in made:
                if call in seen:
                    errors.append(f"turn {n}: tool_use id {call} used twice")
                seen.add(call)
            continue
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if Counter(results) != Counter(made):
            errors.append(f"turn {n}: tool_result {results} do not answer tool_use {made}")
        kinds = [b.get("type") == "tool_result" for b in blocks]
        if kinds != sorted(kinds, reverse=True):
            errors.append(f"turn {n}: tool_result blocks after other content")
        made = []
    if made:
        errors.append(f"tool_use {made} unanswered at the end")
    return errors


def _gemini(body: Body) -> list[str]:
    errors: list[str] = []
    contents = body.get("contents")
    if not isinstance(contents, list):
        return ["'contents' is not a list"]
    made: list[str] = []  # function names called by the model content before
    for i, content in enumerate(contents):
        parts = content.get("parts") or []
        calls = [p["functionCall"].get("name") for p in parts if "functionCall" in p]
        answers = [p["functionResponse"].get("name") for p in parts if "functionResponse" in p]
        role = content.get("role")
        if answers and (role != "user" or Counter(answers) != Counter(made)):
            errors.append(f"contents[{i}]: responses {answers} do not answer calls {made}")
        elif made and not answers:
            errors.append(f"contents[{i}]: calls {made} of the content before are unanswered")
        if calls and role != "model":
            errors.append(f"contents[{i}]: function calls in a {role} content")
        made = calls
    if made:
        errors.append(f"calls {made} unanswered at the end")
    return errors


CHECKS: dict[str, Callable[[Body], list[str]]] = {
    "openai-chat": _openai_chat,
    "openai-responses": _openai_responses,
    "anthropic": _anthropic,
    "gemini": _gemini,
}


def check(provider: str, body: Body) -> list[str]:
    """The pairing problems of ``body`` for ``provider``; [] if it pairs."""
    found = CHECKS.get(provider)
    if found is None:
        return [f"no pairing check for provider {provider!r}"]
    return found(body)
