"""The OpenAI Agents SDK's items as turnstore rows, and back: the codec of
``TurnstoreSession``. Pure functions on JSON values; no SDK import.

Where an item goes:

- a user message (``role: "user"``) is the user message that opens a turn;
- a ``function_call`` and its ``function_call_output`` are one tool row, holding the call
  and its result: the database's pairing rules hold for them;
- every other item (assistant messages, reasoning, system and developer messages, hosted
  and custom tool calls and their outputs, MCP items, compaction items, ...) belongs to the
  assistant message of its step.

Rows keep both what replay needs and the items themselves. A row's content holds the
canonical parts that ``store.replay`` sends to every provider (text, images, OpenAI
reasoning), and its first part carries, under ``"agents_items"``, an entry per item the row
holds: the item with the values already in the parts taken out (``"from"`` says where each
comes back from), and its place in its step (``"i"``). A call is kept whole in its tool row's
``tool_call_data`` (``"agents_call"``). ``restore`` rebuilds each item; the codec checks,
when it encodes an item, that every value it moves into a part comes back from it exactly
(a value that would not is left in the item). Items of rows that the session did not write
(a turn begun with ``Store.begin_turn``, a result closed as interrupted by a takeover) are
made up from the row's canonical content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidMessage
from ..messages import Limits, encode_json

Item = dict[str, Any]
Part = dict[str, Any]
Path = list[str | int]
Role = Literal["user", "assistant", "tool"]
Kind = Literal["user", "call", "output", "content"]

#: the key of a row's first content part that lists the items the row holds
CARRIER = "agents_items"
#: the key of a tool row's ``tool_call_data`` that holds its ``function_call`` item
CALL_KEY = "agents_call"
#: the reasoning format of a part that only carries items (never replayed)
OPAQUE_FORMAT = "openai-agents"

_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)


def item_kind(item: Mapping[str, Any]) -> Kind:
    kind = item.get("type")
    if kind == "function_call":
        return "call"
    if kind == "function_call_output":
        return "output"
    if item.get("role") == "user" and kind in (None, "message"):
        return "user"
    return "content"


def normalized(items: Sequence[Any], limits: Limits) -> list[Item]:
    """The items as plain JSON values (what a database gives back), each checked as the
    store checks every payload: ``InvalidMessage`` for anything that is not a JSON object
    free of NUL characters, NaN and infinities, and within ``limits``."""
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise InvalidMessage(f"add_items takes a list of items, got {type(items).__name__}")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidMessage(f"item {index} is a {type(item).__name__}, not a JSON object")
        text = encode_json(dict(item), f"item {index}", limits)
        out.append(json.loads(text))  # not orjson: it reads an integer past 64 bits as a float
    return out


def same(one: Any, other: Any) -> bool:
    """Equal as JSON values (``1`` and ``1.0`` apart, as a round trip keeps them); False if
    either is not JSON."""
    try:
        return json.dumps(one, sort_keys=True) == json.dumps(other, sort_keys=True)
    except (TypeError, ValueError):
        return False


# --- moving values between items and parts ------------------------------------------------


def _get(item: Any, path: Path) -> Any:
    for key in path:
        item = item[key]
    return item


def _part_value(part: Mapping[str, Any], how: str) -> Any:
    if how == "data_url":
        return f"data:{part['mime_type']};base64,{part['data']}"
    return part[how]


def restore(entry: Mapping[str, Any], parts: Sequence[Mapping[str, Any]]) -> Item:
    """The item an entry stands for, its moved values taken back from ``parts``. The
    containers on the way to a moved value are copied; the rest is the entry's own."""
    item: Item = dict(entry["item"])
    for path, index, how in entry.get("from", ()):
        _put(item, path, _part_value(parts[index], how))
    return item


def _put(item: Any, path: Path, value: Any) -> None:
    """Set ``value`` at ``path`` in ``item`` (a fresh top-level dict), copying each
    container below it on the way, so that the entry it came from is left as it was."""
    for key in path[:-1]:
        inner = item[key]
        item[key] = inner = list(inner) if isinstance(inner, list) else dict(inner)
        item = inner
    item[path[-1]] = value


Moves = list[tuple[Path, int, str]]  # (where in the item, which part, which of its values)


def _text(text: str) -> Part:
    return {"type": "text", "text": text}


def _image(value: Any) -> tuple[Part, str] | None:
    """An image part for an ``image_url`` value, and how to get the value back."""
    if not isinstance(value, str):
        return None
    found = _DATA_URL.fullmatch(value)
    if found:
        return {"type": "image", "mime_type": found[1], "data": found[2]}, "data_url"
    if value.startswith(("http://", "https://")):
        return {"type": "image", "url": value}, "url"
    return None


def _input_parts(content: Any, path: Path, text_types: Sequence[str]) -> tuple[list[Part], Moves]:
    """Parts for a list of content parts (``input_text``, ``output_text``, ``refusal``,
    ``input_image``): each text and image, moved into a part of its own."""
    parts: list[Part] = []
    moves: Moves = []
    if not isinstance(content, list):
        return parts, moves
    for k, piece in enumerate(content):
        if not isinstance(piece, dict):
            continue
        kind = piece.get("type")
        for key in ("text", "refusal"):
            if (
                isinstance(kind, str)
                and kind in text_types
                and isinstance(piece.get(key), str)
                and key in _KEYS[kind]
            ):
                moves.append(([*path, k, key], len(parts), "text"))
                parts.append(_text(piece[key]))
        if kind == "input_image":
            image = _image(piece.get("image_url"))
            if image is not None:
                moves.append(([*path, k, "image_url"], len(parts), image[1]))
                parts.append(image[0])
    return parts, moves


_KEYS = {"input_text": ("text",), "output_text": ("text",), "refusal": ("refusal",)}


def canonical(role: Role, item: Item) -> tuple[list[Part], Moves]:
    """The parts replay reads for ``item`` in a row of ``role``, and the values of the item
    they hold (not yet checked: see ``RowContent.add``)."""
    content = item.get("content")
    if role == "user" and item_kind(item) == "user":
        if isinstance(content, str):
            return [_text(content)], [(["content"], 0, "text")]
        return _input_parts(content, ["content"], ("input_text",))
    if role == "assistant":
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") == "assistant":
            if isinstance(content, str):
                return [_text(content)], [(["content"], 0, "text")]
            return _input_parts(content, ["content"], ("output_text", "refusal", "input_text"))
        if kind == "reasoning" and isinstance(item.get("id"), str):
            return _reasoning(item)
        return [], []
    if role == "tool" and item_kind(item) == "output":
        output = item.get("output")
        if isinstance(output, str):
            return [_text(output)], [(["output"], 0, "text")]
        return _input_parts(output, ["output"], ("input_text",))
    return [], []


def _reasoning(item: Item) -> tuple[list[Part], Moves]:
    """An OpenAI Responses reasoning item as the store's reasoning part, which
    ``store.replay`` sends back to OpenAI Responses with the calls of its step."""
    summary = item.get("summary")
    texts = [
        s["text"] for s in summary or () if isinstance(s, dict) and isinstance(s.get("text"), str)
    ]
    part: Part = {"type": "reasoning", "format": "openai-responses", "id": item["id"]}
    part["summary"] = texts
    moves: Moves = []
    if isinstance(item.get("encrypted_content"), str):
        part["encrypted_content"] = item["encrypted_content"]
        moves.append((["encrypted_content"], 0, "encrypted_content"))
    return [part], moves


def _reduced(item: Item, moves: Moves) -> Item:
    """``item`` without its moved values (the containers on their way copied)."""
    out: Item = dict(item)
    for path, _, _ in moves:
        holder: Any = out
        for key in path[:-1]:
            inner = holder[key]
            holder[key] = inner = list(inner) if isinstance(inner, list) else dict(inner)
            holder = inner
        del holder[path[-1]]
    return out


class RowContent:
    """The content of one row: canonical parts, and the entries of the items it holds."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self._parts: list[Part] = []
        self.entries: list[dict[str, Any]] = []

    def add(self, item: Item, order: int | None) -> None:
        parts, moves = canonical(self.role, item)
        if not all(_part_value(parts[i], how) == _get(item, path) for path, i, how in moves):
            parts, moves = [], []  # a value the parts would not give back: keep it whole
        base = len(self._parts)
        entry: dict[str, Any] = {"item": _reduced(item, moves) if moves else item}
        if moves:
            entry["from"] = [[path, base + index, how] for path, index, how in moves]
        if order is not None:
            entry["i"] = order
        self._parts.extend(parts)
        self.entries.append(entry)

    def parts(self) -> list[Part]:
        if not self.entries:
            return [dict(p) for p in self._parts]
        parts = [dict(p) for p in self._parts] or [_carrier_part(self.role)]
        parts[0][CARRIER] = self.entries
        return parts


def _carrier_part(role: Role) -> Part:
    if role == "assistant":
        return {"type": "reasoning", "format": OPAQUE_FORMAT}
    return _text("")


def content_of(role: Role, items: Sequence[tuple[Item, int | None]]) -> list[Part]:
    row = RowContent(role)
    for item, order in items:
        row.add(item, order)
    return row.parts()


def call_data(item: Item, order: int) -> dict[str, Any]:
    """A tool row's ``tool_call_data`` for a ``function_call`` item: kept whole, and its
    ``id`` where replay looks for an OpenAI Responses item id."""
    data: dict[str, Any] = {CALL_KEY: {"item": item, "i": order}}
    if isinstance(item.get("id"), str):
        data["openai_item_id"] = item["id"]
    return data


def call_arguments(item: Item) -> dict[str, Any]:
    """A call's arguments as the JSON object the store keeps (``{}`` when the model's
    string is not one; the item keeps the string as it came)."""
    arguments = item.get("arguments")
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return {}
        if isinstance(value, dict):
            return value
    return {}


def call_name(item: Item) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidMessage(f"function_call {item.get('call_id')!r} has no name")
    return name


def call_id_of(item: Mapping[str, Any], what: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidMessage(f"{what} without a call_id")
    return call_id


# --- reading rows back --------------------------------------------------------------------


def _carried(content: Sequence[Mapping[str, Any]]) -> list[tuple[Item, int | None]] | None:
    """The items a row's content carries, with their places; None if it carries none (a
    row the session did not write)."""
    if not content or not isinstance(content[0], Mapping):
        return None
    entries = content[0].get(CARRIER)
    if not isinstance(entries, list):
        return None
    return [(restore(entry, content), entry.get("i")) for entry in entries]


def user_items(content: Sequence[Mapping[str, Any]]) -> list[Item]:
    carried = _carried(content)
    if carried is not None:
        return [item for item, _ in carried]
    texts = [p for p in content if p.get("type") == "text"]
    if len(content) == 1 and len(texts) == 1:
        return [{"role": "user", "content": texts[0]["text"]}]
    pieces: list[Item] = []
    for part in content:
        if part.get("type") == "text":
            pieces.append({"type": "input_text", "text": part["text"]})
        elif part.get("type") == "image":
            url = part.get("url") or f"data:{part.get('mime_type')};base64,{part.get('data')}"
            pieces.append({"type": "input_image", "image_url": url, "detail": "auto"})
    return [{"role": "user", "content": pieces}] if pieces else []


def assistant_items(content: Sequence[Mapping[str, Any]]) -> list[tuple[Item, int | None]]:
    carried = _carried(content)
    if carried is not None:
        return carried
    out: list[tuple[Item, int | None]] = []
    texts: list[str] = []

    def said() -> None:
        if texts:
            out.append(({"role": "assistant", "content": "\n".join(texts)}, None))
            texts.clear()

    for part in content:
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "reasoning" and part.get("format") == "openai-responses":
            said()
            summary = [{"type": "summary_text", "text": s} for s in part.get("summary") or ()]
            reasoning: Item = {"type": "reasoning", "id": part.get("id"), "summary": summary}
            if part.get("encrypted_content") is not None:
                reasoning["encrypted_content"] = part["encrypted_content"]
            out.append((reasoning, None))
    said()
    return out


def call_item(
    call_id: str, name: str, arguments_json: str | None, data: Mapping[str, Any] | None
) -> tuple[Item, int | None]:
    entry = data.get(CALL_KEY) if isinstance(data, Mapping) else None
    if isinstance(entry, Mapping):
        return dict(entry["item"]), entry.get("i")
    made: Item = {
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments_json if arguments_json is not None else "{}",
    }
    return made, None


def output_item(call_id: str, content: Sequence[Mapping[str, Any]]) -> tuple[Item, int | None]:
    """A tool row's ``function_call_output``; ``call_id`` is the call's id as the SDK gave
    it (a made-up output answers that id)."""
    carried = _carried(content)
    if carried:
        return carried[0]
    texts = []
    for part in content:
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "json":
            texts.append(json.dumps(part.get("value"), ensure_ascii=False))
    output = {"type": "function_call_output", "call_id": call_id, "output": "\n".join(texts)}
    return output, None


@dataclass(frozen=True, slots=True)
class Piece:
    """One item of a step as read back, and where it is stored: ``slot`` is its place among
    the items of the row at ``position`` (a tool row: 0 its call, 1 its output)."""

    item: Item
    position: int
    slot: int
    order: int | None = None


def in_step_order(pieces: Sequence[Piece]) -> list[Piece]:
    """A step's items in the order they were added. ``pieces`` come in the rows' layout
    (the assistant message's items, then the calls, then the outputs); an item without a
    recorded place (made up from a row the session did not write) keeps that layout,
    after every item that has one."""
    known = [p.order for p in pieces if p.order is not None]
    after = (max(known) + 1) if known else 0
    placed = []
    for piece in pieces:
        order = piece.order
        if order is None:
            order, after = after, after + 1
        placed.append((order, piece))
    placed.sort(key=lambda pair: pair[0])
    return [piece for _, piece in placed]
