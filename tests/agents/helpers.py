"""Helpers for the tests of ``TurnstoreSession`` (the OpenAI Agents SDK integration)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from store import StoreConfig
from store.integrations.openai_agents import TurnstoreSession

CONFIG = StoreConfig(lease_seconds=30, poll_max_seconds=0.05)

MakeSession = Callable[..., TurnstoreSession]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def said(text: str, item_id: str = "msg_1") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def call(call_id: str, name: str = "lookup", arguments: str = '{"q":"x"}') -> dict[str, Any]:
    return {
        "id": f"fc_{call_id}",
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def output(call_id: str, text: str = "result") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def step(*call_ids: str, text: str = "working") -> list[dict[str, Any]]:
    """One tool step as the Runner writes it: message, calls, then their outputs."""
    return [
        said(text, f"msg_{call_ids[0]}" if call_ids else "msg"),
        *(call(c) for c in call_ids),
        *(output(c, f"out {c}") for c in call_ids),
    ]
