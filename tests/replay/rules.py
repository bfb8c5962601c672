"""Provider rule checkers, written from /work/shared/provider-rules.md and independent of the
replay code. Each returns a list of violations; an empty list means the provider accepts
the request's tool-call pairing and message structure."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any


def _json_object_string(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except json.JSONDecodeError:
        return False


# --- OpenAI Chat Completions -------------------------------------------------------------


def check_openai_chat(body: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ["'messages' must be a list"]
    seen_ids: set[str] = set()
    i = 0
    while i < len(messages):
        message = messages[i]
        role = message.get("role")
        where = f"messages[{i}]"
        if role not in ("system", "user", "assistant", "tool"):
            errors.append(f"{where}: unknown role {role!r}")
        if role == "tool":
            errors.append(
                f"{where}: messages with role 'tool' must be a response to a preceeding "
                f"message with 'tool_calls' ({message.get('tool_call_id')})"
            )
            i += 1
            continue
        if role == "user" and not message.get("content"):
            errors.append(f"{where}: empty user message")
        if role != "assistant":
            i += 1
            continue
        calls = message.get("tool_calls") or []
        content = message.get("content")
        if not calls:
            if not isinstance(content, str) or not content:
                errors.append(f"{where}: assistant message with neither content nor tool_calls")
            i += 1
            continue
        if content is not None and not (isinstance(content, str) and content):
            errors.append(
                f"{where}: tool-only assistant message must send content null, not {content!r}"
            )
        ids: list[str] = []
        for call in calls:
            call_id = call.get("id")
            function = call.get("function") or {}
            if not isinstance(call_id, str) or not call_id:
                errors.append(f"{where}: tool call without id")
                continue
            if call.get("type") != "function" or not isinstance(function.get("name"), str):
                errors.append(f"{where}: tool call {call_id} is not a named function call")
            if not _json_object_string(function.get("arguments")):
                errors.append(f"{where}: arguments of {call_id} must be a JSON string")
            if call_id in seen_ids:
                errors.append(f"{where}: duplicate tool_call id {call_id}")
            seen_ids.add(call_id)
            ids.append(call_id)
        j = i + 1
        answered: list[Any] = []
        while j < len(messages) and messages[j].get("role") == "tool":
            answered.append(messages[j].get("tool_call_id"))
            if not isinstance(messages[j].get("content"), str):
                errors.append(f"messages[{j}]: tool content must be a string")
            j += 1
        missing = [c for c in ids if c not in answered]
        if missing:
            errors.append(
                f"{where}: An assistant message with 'tool_calls' must be followed by tool "
                f"messages responding to each 'tool_call_id'. Missing: {missing}"
            )
        for call_id, count in Counter(answered).items():
            if call_id not in ids:
                errors.append(f"{where}: tool message for unknown tool_call_id {call_id}")
            elif count > 1:
                errors.append(f"{where}: {count} tool messages for {call_id}")
        i = j
    return errors


# --- OpenAI Responses --------------------------------------------------------------------

_OUTPUT_ITEM_TYPES = ("function_call", "reasoning")


def _is_assistant_message(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "assistant"


def check_openai_responses(body: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    items = body.get("input")
    if not isinstance(items, list):
        return ["'input' must be a list"]
    calls: dict[str, int] = {}
    outputs: set[str] = set()
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        where = f"input[{i}]"
        if kind == "function_call":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                errors.append(f"{where}: function_call without call_id")
                continue
            if call_id in calls:
                errors.append(f"{where}: duplicate function_call {call_id}")
            if not isinstance(item.get("name"), str):
                errors.append(f"{where}: function_call {call_id} without name")
            if not _json_object_string(item.get("arguments")):
                errors.append(f"{where}: arguments of {call_id} must be a JSON string")
            calls[call_id] = i
            if "id" in item and not _reasoning_before(items, i):
                errors.append(
                    f"Item '{item['id']}' of type 'function_call' was provided without its "
                    "required 'reasoning' item"
                )
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in calls:
                errors.append(
                    f"{where}: No tool call found for function call output with call_id {call_id}"
                )
            elif call_id in outputs:
                errors.append(f"{where}: second function_call_output for {call_id}")
            outputs.add(call_id)
            if not isinstance(item.get("output"), str):
                errors.append(f"{where}: output must be a string")
        elif kind == "reasoning":
            if not isinstance(item.get("id"), str) or not isinstance(item.get("summary"), list):
                errors.append(f"{where}: reasoning item needs id and summary")
            following = next((x for x in items[i + 1 :] if x.get("type") != "reasoning"), None)
            if following is None or not (
                following.get("type") == "function_call" or _is_assistant_message(following)
            ):
                errors.append(
                    f"Item '{item.get('id')}' of type 'reasoning' was provided without its "
                    "required following item."
                )
        elif kind == "message":
            if item.get("role") not in ("system", "developer", "user", "assistant"):
                errors.append(f"{where}: unknown role {item.get('role')!r}")
            if not item.get("content"):
                errors.append(f"{where}: empty message")
        else:
            errors.append(f"{where}: unknown item type {kind!r}")
    for call_id in calls:
        if call_id not in outputs:
            errors.append(f"No tool output found for function call {call_id}.")
    return errors


def _reasoning_before(items: list[dict[str, Any]], index: int) -> bool:
    """Whether a reasoning item sits in the run of output items that ends at ``index``."""
    for item in reversed(items[:index]):
        if item.get("type") == "reasoning":
            return True
        if not (item.get("type") in _OUTPUT_ITEM_TYPES or _is_assistant_message(item)):
            return False
    return False


# --- Anthropic Messages ------------------------------------------------------------------


def _merged_turns(messages: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive same-role messages merged, as the API does."""
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for message in messages:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if turns and turns[-1][0] == message.get("role"):
            turns[-1][1].extend(blocks)
        else:
            turns.append((message.get("role"), list(blocks)))
    return turns


def check_anthropic(body: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ["'messages' must be a list"]
    if "system" in body and not isinstance(body["system"], str | list):
        errors.append("system must be a string or a list of blocks")
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            errors.append(f"messages.{i}: role must be user or assistant")
        content = message.get("content")
        if not content or not isinstance(content, str | list):
            errors.append(f"messages.{i}: content must be a non-empty string or list")
        if isinstance(content, list):
            for m, block in enumerate(content):
                if block.get("type") == "text" and not str(block.get("text", "")).strip():
                    errors.append(
                        f"messages.{i}.content.{m}: text content blocks must be non-empty"
                    )
    if errors:
        return errors
    turns = _merged_turns(messages)
    if turns and turns[0][0] != "user":
        errors.append("messages.0: first message must use the user role")
    used: set[str] = set()
    for n, (role, blocks) in enumerate(turns):
        previous_ids: list[str] = []
        if n > 0 and turns[n - 1][0] == "assistant":
            previous_ids = [b["id"] for b in turns[n - 1][1] if b.get("type") == "tool_use"]
        if role == "assistant":
            ids = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
            for block in blocks:
                if block.get("type") == "tool_use":
                    if not isinstance(block.get("input"), dict):
                        errors.append(
                            f"turn {n}: tool_use {block.get('id')} input must be an object"
                        )
                    if block.get("id") in used:
                        errors.append(f"turn {n}: tool_use ids must be unique: {block.get('id')}")
                    used.add(block.get("id"))
            following = turns[n + 1] if n + 1 < len(turns) else None
            answered = (
                [b.get("tool_use_id") for b in following[1] if b.get("type") == "tool_result"]
                if following is not None and following[0] == "user"
                else []
            )
            missing = [i for i in ids if i not in answered]
            if missing:
                errors.append(
                    f"turn {n}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {missing}"
                )
            continue
        results = [b for b in blocks if b.get("type") == "tool_result"]
        ids = [b.get("tool_use_id") for b in results]
        for call_id, count in Counter(ids).items():
            if call_id not in previous_ids:
                errors.append(
                    f"turn {n}: unexpected `tool_use_id` found in `tool_result` blocks: {call_id}"
                )
            elif count > 1:
                errors.append(f"turn {n}: {count} tool_result blocks for {call_id}")
        first_other = next(
            (k for k, b in enumerate(blocks) if b.get("type") != "tool_result"), len(blocks)
        )
        if any(b.get("type") == "tool_result" for b in blocks[first_other:]):
            errors.append(f"turn {n}: tool_result blocks must come before any other content")
        for block in results:
            if "is_error" in block and not isinstance(block["is_error"], bool):
                errors.append(f"turn {n}: is_error must be a boolean")
    return errors


# --- Google Gemini -----------------------------------------------------------------------


def check_gemini(body: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    contents = body.get("contents")
    if not isinstance(contents, list):
        return ["'contents' must be a list"]
    for i, content in enumerate(contents):
        role = content.get("role")
        parts = content.get("parts")
        if role not in ("user", "model"):
            errors.append(f"contents[{i}]: role must be user or model, not {role!r}")
        if not isinstance(parts, list) or not parts:
            errors.append(f"contents[{i}]: parts must be a non-empty list")
            continue
        calls = [p["functionCall"] for p in parts if "functionCall" in p]
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        if calls and role != "model":
            errors.append(f"contents[{i}]: functionCall parts belong in a model turn")
        if responses and role != "user":
            errors.append(f"contents[{i}]: functionResponse parts belong in a user turn")
        if any(not isinstance(c.get("args", {}), dict) for c in calls):
            errors.append(f"contents[{i}]: functionCall args must be an object")
        if any(not isinstance(r.get("response"), dict) for r in responses):
            errors.append(f"contents[{i}]: functionResponse response must be an object")
        if calls:
            if i == 0:
                errors.append("contents[0]: history may not start with a function call")
            elif contents[i - 1].get("role") != "user":
                errors.append(
                    f"contents[{i}]: Please ensure that function call turn comes immediately "
                    "after a user turn or after a function response turn."
                )
            following = contents[i + 1] if i + 1 < len(contents) else {}
            answered = [
                p["functionResponse"] for p in following.get("parts", []) if "functionResponse" in p
            ]
            if following.get("role") != "user" or len(answered) != len(calls):
                errors.append(
                    f"contents[{i}]: Please ensure that the number of function response parts "
                    "is equal to the number of function call parts of the function call turn."
                )
            elif Counter(c.get("name") for c in calls) != Counter(r.get("name") for r in answered):
                errors.append(
                    f"contents[{i + 1}]: function responses do not match the calls' names"
                )
        if responses:
            before = contents[i - 1] if i > 0 else {}
            made = [p for p in before.get("parts", []) if "functionCall" in p]
            if before.get("role") != "model" or len(made) != len(responses):
                errors.append(
                    f"contents[{i}]: {len(responses)} function response parts do not answer a "
                    "function call turn with as many calls"
                )
    return errors


CHECKERS = {
    "openai-chat": check_openai_chat,
    "openai-responses": check_openai_responses,
    "anthropic": check_anthropic,
    "gemini": check_gemini,
}


def pair_counts(provider: str, body: dict[str, Any]) -> tuple[int, int]:
    """(calls, results) in a body."""
    if provider == "openai-chat":
        messages = body["messages"]
        calls = sum(len(m.get("tool_calls") or []) for m in messages)
        return calls, sum(1 for m in messages if m["role"] == "tool")
    if provider == "openai-responses":
        kinds = Counter(item.get("type") for item in body["input"])
        return kinds["function_call"], kinds["function_call_output"]
    if provider == "anthropic":
        blocks = [
            b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]
        ]
        kinds = Counter(b["type"] for b in blocks)
        return kinds["tool_use"], kinds["tool_result"]
    parts = [p for c in body["contents"] for p in c["parts"]]
    return sum("functionCall" in p for p in parts), sum("functionResponse" in p for p in parts)


def call_ids(provider: str, body: dict[str, Any]) -> list[str]:
    """The call ids in a body (Gemini has none)."""
    if provider == "openai-chat":
        return [c["id"] for m in body["messages"] for c in m.get("tool_calls") or []]
    if provider == "openai-responses":
        return [i["call_id"] for i in body["input"] if i.get("type") == "function_call"]
    if provider == "anthropic":
        return [
            b["id"]
            for m in body["messages"]
            if isinstance(m["content"], list)
            for b in m["content"]
            if b["type"] == "tool_use"
        ]
    return []
