"""Small helpers the provider formats share: JSON text, image URLs, tool-result text."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .model import ImagePart, JsonPart, ReplayToolCall, ResultPart, TextPart


def json_text(value: Any) -> str:
    """Compact JSON, UTF-8 kept readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_copy(value: Any) -> Any:
    """A shallow copy: the body's top-level object is its own, nested values are shared
    with the messages it came from (a deep copy per call doubled the cost of a replay)."""
    return dict(value) if isinstance(value, Mapping) else value


def arguments_json(call: ReplayToolCall) -> str:
    """Tool-call arguments as the JSON string OpenAI's formats want: the stored text when
    the reader kept it, else encoded."""
    if call.arguments_json is not None:
        return call.arguments_json
    return json_text(dict(call.arguments))


def image_url(image: ImagePart) -> str:
    """The image as a URL: its own, or a base64 ``data:`` URL."""
    if image.url:
        return image.url
    return f"data:{image.mime_type or 'application/octet-stream'};base64,{image.data or ''}"


def image_placeholder(image: ImagePart) -> str:
    return f"[image: {image.mime_type or image.url or 'unknown'}]"


def texts(parts: Iterable[Any]) -> list[str]:
    """The non-blank text of ``parts``, one string per part."""
    return [p.text for p in parts if isinstance(p, TextPart) and p.text.strip()]


def joined(texts: Iterable[str]) -> str:
    """The non-blank ``texts``, one per line: a message's text for string-content formats."""
    return "\n".join([t for t in texts if t.strip()])


def part_text(part: ResultPart) -> str:
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, JsonPart):
        return part.value if isinstance(part.value, str) else json_text(part.value)
    return image_placeholder(part)


def result_text(content: tuple[ResultPart, ...], is_error: bool) -> str:
    """A tool result as one string, for formats whose results are strings."""
    return marked_error("\n".join(part_text(p) for p in content), is_error)


def marked_error(text: str, is_error: bool) -> str:
    """A result's text, marked as an error when it is one, for formats whose results are
    strings and so have no error flag."""
    if is_error and not text.lower().startswith(("error", "interrupted")):
        return f"Error: {text}" if text else "Error"
    return text
