"""The messages a turn writes and history returns, and the checks that refuse bad input.

Content is stored as a JSON list of parts:

- ``{"type": "text", "text": "..."}``
- ``{"type": "image", "mime_type": "image/png", "data": "<base64>"}``, or with ``"url"``
- ``{"type": "reasoning", "format": F, ...}``: provider reasoning to send back to provider
  F (assistant messages only). Each provider's own shape is accepted as it comes and
  stored with its format (``reasoning_part``): Anthropic ``thinking`` (with its
  ``signature``) and ``redacted_thinking`` blocks, an OpenAI Responses ``reasoning`` item
  (``id``, ``encrypted_content``, ``summary``), DeepSeek's ``reasoning_content``, a Gemini
  part with a ``thoughtSignature``.

A plain string is shorthand for one text part.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from .errors import InvalidMessage

Role = Literal["user", "assistant", "tool"]
Part = dict[str, Any]
Content = str | Sequence[Mapping[str, Any]]

INTERRUPTED = "interrupted: the turn ended before this tool call returned a result"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of an assistant message. ``arguments`` is a JSON object.
    ``provider_data`` carries what a provider needs back verbatim with the call
    (Gemini's ``thought_signature``, OpenAI Responses' item id)."""

    id: str
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    provider_data: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StoredToolCall(ToolCall):
    """A tool call as history returns it: also the arguments' JSON text as the database
    holds it, so that formats wanting a JSON string need not encode it again."""

    arguments_json: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of one tool call. A failed tool still gets a result, with ``is_error``."""

    call_id: str
    content: Content = ""
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class AssistantMessage:
    """One model response: text and reasoning parts, and the tool calls it made."""

    content: Content = ""
    tool_calls: Sequence[ToolCall] = ()


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A committed message, as ``Store.history`` returns it."""

    conversation_id: str
    position: int
    role: Role
    content: list[Part]
    turn_id: str
    step: int
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None
    is_error: bool = False
    created_at: datetime | None = None

    @property
    def text(self) -> str:
        """The message's text parts joined: a convenience for display."""
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


@dataclass(frozen=True, slots=True)
class Limits:
    """Input limits, checked before anything is written."""

    max_id_length: int = 256
    max_name_length: int = 256
    max_message_bytes: int = 4 * 1024 * 1024
    max_tool_calls_per_step: int = 256


# --- validation -------------------------------------------------------------------------

_PART_TYPES_BY_ROLE: dict[str, frozenset[str]] = {
    "user": frozenset({"text", "image"}),
    "assistant": frozenset({"text", "reasoning", "thinking", "redacted_thinking"}),
    "tool": frozenset({"text", "image", "json"}),
}


def _check_json_value(value: Any, where: str) -> bool:
    """Refuse what JSON (and PostgreSQL's jsonb) cannot hold: non-string keys, NaN and
    infinities, NUL characters, and objects that are not JSON types. True if the value is
    plain: made of str, int, bool, None, list, tuple and dict (str keys) alone, not of
    subclasses, other mappings or floats (see ``encode_json``)."""
    plain = True
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)  # the exact types first: the walk runs on every payload
        if kind is str:
            if "\x00" in item:
                raise _has_nul(where)
        elif kind is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    _check_key(key, where)
                    plain = False  # a str subclass: orjson takes only str keys
                if "\x00" in key:
                    raise _has_nul(where)
                if type(sub) is str:
                    if "\x00" in sub:
                        raise _has_nul(where)
                else:
                    stack.append(sub)
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is int or kind is bool or item is None:
            continue
        else:
            plain = False
            _check_other(item, stack, where)
    return plain


def _has_nul(where: str) -> InvalidMessage:
    return InvalidMessage(f"{where}: strings may not contain NUL characters")


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str):
        raise InvalidMessage(f"{where}: object keys must be strings, got {key!r}")


def _check_other(item: Any, stack: list[Any], where: str) -> None:
    """The types ``_check_json_value`` does not check by their exact type: floats, and
    subclasses of str, int, dict, list and tuple (or other mappings)."""
    if isinstance(item, str):
        if "\x00" in item:
            raise _has_nul(where)
    elif isinstance(item, Mapping):
        for key, sub in item.items():
            _check_key(key, where)
            if "\x00" in key:
                raise _has_nul(where)
            stack.append(sub)
    elif isinstance(item, list | tuple):
        stack.extend(item)
    elif isinstance(item, int):  # bool too
        return
    elif isinstance(item, float):
        if item != item or item in (float("inf"), float("-inf")):
            raise InvalidMessage(f"{where}: NaN and infinity are not JSON")
    else:
        raise InvalidMessage(
            f"{where}: {type(item).__name__} is not JSON-serialisable "
            "(use str, int, float, bool, None, list or dict)"
        )


def _mapping_as_dict(value: Any) -> dict[str, Any]:
    """Mappings that are not dicts (checked by ``_check_json_value``) as JSON objects."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_mapping_as_dict
).encode


def _encode_plain(value: Any) -> str:
    """A plain value (see ``_check_json_value``) as ``_encode`` writes it, by orjson, which
    writes those types byte for byte alike (tests/test_json_encoding.py) in a tenth of the
    time. Where orjson refuses (an int beyond 64 bits, a lone surrogate, nesting deeper
    than 254), the standard encoder does what it always did."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _encode(value)


def encode_json(value: Any, where: str, limits: Limits) -> str:
    """Check ``value`` and serialise it; refuse it if it is larger than the limit.

    The text is the standard library's compact encoding (``ensure_ascii=False``, no
    spaces) whichever encoder writes it: a user message's idempotency hash is taken over
    it, so it must not change from one version to the next. Floats, subclasses and other
    mappings go to the standard encoder; orjson, which writes some floats otherwise
    (``1e16`` for ``1e+16``), takes the rest."""
    text = _encode_plain(value) if _check_json_value(value, where) else _encode(value)
    # UTF-8 takes at most 4 bytes a character: count the bytes only when it could matter
    if len(text) * 4 > limits.max_message_bytes and len(text.encode()) > limits.max_message_bytes:
        raise InvalidMessage(
            f"{where}: {len(text.encode())} bytes is over the limit of "
            f"{limits.max_message_bytes} (Limits.max_message_bytes)"
        )
    return text


def normalize_content(content: Content, role: Role, where: str) -> list[Part]:
    """Turn a string or a list of parts into a list of part dicts, checking part types."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, Sequence):
        raise InvalidMessage(f"{where}: content must be a string or a list of parts")
    allowed = _PART_TYPES_BY_ROLE[role]
    parts: list[Part] = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise InvalidMessage(f"{where}: part {i} must be a mapping with a 'type'")
        kind = part.get("type")
        if kind not in allowed:
            raise InvalidMessage(
                f"{where}: part {i} has type {kind!r}; a {role} message takes {sorted(allowed)}"
            )
        if kind == "text" and not isinstance(part.get("text"), str):
            raise InvalidMessage(f"{where}: text part {i} needs a string 'text'")
        if kind in _REASONING_TYPES:
            parts.append(reasoning_part(part, f"{where}: part {i}"))
        else:
            parts.append(dict(part))
    return parts


_REASONING_TYPES = frozenset({"reasoning", "thinking", "redacted_thinking"})
REASONING_FORMATS = ("anthropic", "openai-responses", "deepseek", "gemini")


def reasoning_part(part: Mapping[str, Any], where: str) -> Part:
    """A provider's reasoning, as stored: ``{"type": "reasoning", "format": F, ...}``.
    Accepts each provider's own shape (see the module's docstring) and says which one it
    is; refuses reasoning whose provider cannot be told, since it could never be sent
    back. A ``format`` outside ``REASONING_FORMATS`` is stored and never replayed."""
    fields = {k: v for k, v in part.items() if k != "type"}
    kind = part.get("type")
    fmt = fields.get("format")
    if kind == "thinking" or (fmt is None and "thinking" in fields):
        fmt = "anthropic"
        _need_str(fields, ("thinking", "signature"), where)
    elif kind == "redacted_thinking":
        fmt = "anthropic"
        _need_str(fields, ("data",), where)
    elif fmt is None and ("thoughtSignature" in fields or "thought_signature" in fields):
        fmt = "gemini"
        fields["thought_signature"] = fields.pop("thoughtSignature", None) or fields.get(
            "thought_signature"
        )
    elif fmt is None and "reasoning_content" in fields:
        fmt = "deepseek"
        fields["text"] = fields.pop("reasoning_content")
    elif fmt is None and ("encrypted_content" in fields or "summary" in fields or "id" in fields):
        fmt = "openai-responses"
    if not isinstance(fmt, str) or not fmt:
        raise InvalidMessage(
            f"{where}: reasoning whose provider cannot be told; give the provider's own "
            "shape (an Anthropic thinking block, an OpenAI reasoning item, ...) or a "
            f"'format' ({', '.join(REASONING_FORMATS)} are replayed; another is stored only)"
        )
    if fmt == "openai-responses":
        _need_str(fields, ("id",), where)
    return {"type": "reasoning", **fields, "format": fmt}


def _need_str(fields: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    for key in keys:
        if not isinstance(fields.get(key), str):
            raise InvalidMessage(f"{where}: reasoning needs a string {key!r}")


def check_identifier(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > limit:
        raise InvalidMessage(f"{what} is {len(value)} characters; the limit is {limit}")
    if "\x00" in value:
        raise InvalidMessage(f"{what} may not contain NUL characters")
    return value


@dataclass(frozen=True, slots=True)
class EncodedCall:
    id: str
    name: str
    arguments_json: str
    provider_data_json: str | None


@dataclass(frozen=True, slots=True)
class EncodedResult:
    call_id: str
    tool_name: str
    content_json: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class EncodedStep:
    """A validated step, serialised and ready for the backend: the assistant message, its
    calls in order, and one result per call in the same order."""

    content_json: str
    calls: tuple[EncodedCall, ...]
    results: tuple[EncodedResult, ...]


def encode_call(call: ToolCall, limits: Limits) -> EncodedCall:
    """Validate and serialise one tool call."""
    if not isinstance(call, ToolCall):
        raise InvalidMessage(f"tool calls must be ToolCall, got {type(call).__name__}")
    call_id = check_identifier(call.id, "tool call id", limits.max_id_length)
    name = check_identifier(call.name, f"tool name of call {call_id!r}", limits.max_name_length)
    if not isinstance(call.arguments, Mapping):
        raise InvalidMessage(f"arguments of call {call_id!r} must be a JSON object")
    args = encode_json(dict(call.arguments), f"arguments of call {call_id!r}", limits)
    extra = None
    if call.provider_data is not None:
        extra = encode_json(dict(call.provider_data), f"provider_data of {call_id!r}", limits)
    return EncodedCall(call_id, name, args, extra)


def encode_result(result: ToolResult, tool_name: str, limits: Limits) -> EncodedResult:
    """Validate and serialise one tool result."""
    where = f"result of {result.call_id!r}"
    content = normalize_content(result.content, "tool", where)
    return EncodedResult(
        result.call_id, tool_name, encode_json(content, where, limits), bool(result.is_error)
    )


def encode_user_message(content: Content, limits: Limits) -> str:
    parts = normalize_content(content, "user", "user message")
    if not parts:
        raise InvalidMessage("user message is empty")
    return encode_json(parts, "user message", limits)


def encode_step(
    assistant: AssistantMessage,
    results: Sequence[ToolResult],
    limits: Limits,
    *,
    known_call_ids: frozenset[str] = frozenset(),
) -> EncodedStep:
    """Validate one step. ``known_call_ids`` are call ids this turn already committed."""
    if not isinstance(assistant, AssistantMessage):
        raise InvalidMessage(
            f"the step's message must be an AssistantMessage, got {type(assistant).__name__}"
        )
    parts = normalize_content(assistant.content, "assistant", "assistant message")
    calls = list(assistant.tool_calls)
    if not parts and not calls:
        raise InvalidMessage("assistant message is empty: no content and no tool calls")
    if len(calls) > limits.max_tool_calls_per_step:
        raise InvalidMessage(
            f"{len(calls)} tool calls in one step; the limit is {limits.max_tool_calls_per_step}"
        )
    encoded_calls: list[EncodedCall] = []
    names: dict[str, str] = {}
    for call in calls:
        encoded = encode_call(call, limits)
        if encoded.id in names or encoded.id in known_call_ids:
            raise InvalidMessage(f"duplicate tool call id {encoded.id!r}")
        names[encoded.id] = encoded.name
        encoded_calls.append(encoded)

    by_id: dict[str, ToolResult] = {}
    for result in results:
        if not isinstance(result, ToolResult):
            raise InvalidMessage(f"results must be ToolResult, got {type(result).__name__}")
        if not isinstance(result.call_id, str) or result.call_id not in names:
            raise InvalidMessage(
                f"result for call {result.call_id!r}, which is not a tool call of this step"
            )
        if result.call_id in by_id:
            raise InvalidMessage(f"second result for call {result.call_id!r}")
        by_id[result.call_id] = result
    missing = [c.id for c in encoded_calls if c.id not in by_id]
    if missing:
        raise InvalidMessage(
            f"no result for tool calls {missing}; every call needs exactly one result "
            "(use turn.step() to have unanswered calls closed as interrupted)"
        )
    encoded_results = [encode_result(by_id[call.id], call.name, limits) for call in encoded_calls]
    return EncodedStep(
        encode_json(parts, "assistant message", limits),
        tuple(encoded_calls),
        tuple(encoded_results),
    )
