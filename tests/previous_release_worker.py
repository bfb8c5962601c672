"""Run by tests/test_previous_release.py in a subprocess whose ``store`` package is the
previous release's (PYTHONPATH): its write path against a database migrated to the
current schema. Prints what it did as one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

# An editable install of the current code adds a finder that would serve it any module
# the previous release lacks: only the previous release's own modules may load.
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]


async def main(url: str, schema: str | None) -> None:
    import store
    from store import AssistantMessage, Store, StoreConfig, ToolCall, ToolResult

    # A release with the compatibility window opens the newer schema the way production
    # does, without migrating; the releases before it (up to schema version 11) checked
    # for their exact version with migrate=False, and opened a newer schema only with
    # migrate=True (their migrate applied nothing there).
    windowed = Path(store.__file__).with_name("schema_window.py").is_file()
    config = StoreConfig(lease_seconds=30)
    async with Store.open(url, schema=schema, config=config, migrate=not windowed) as s:
        # a double submit: two at once with the same key, one turn
        first, second = await _twice(s, "prev-conv", "Plan the trip", "prev-submit-1")
        owner = first if not first.duplicate else second
        await owner.commit_step(
            AssistantMessage("Booking.", [ToolCall("call_train", "book", {"to": "Lyon"})]),
            [ToolResult("call_train", "booked")],
        )
        await owner.finish("Booked the train.")
        # the same submit after the turn ended: the first turn again, nothing written
        late = await s.begin_turn("prev-conv", "Plan the trip", idempotency_key="prev-submit-1")
        # a keyless double submit (the same message within the window is the same submit)
        a, b = await _twice(s, "prev-conv", "And a hotel?", None)
        keyless = a if not a.duplicate else b
        await keyless.commit_step(
            AssistantMessage("Searching.", [ToolCall("call_hotel", "search", {})]),
            [ToolResult("call_hotel", "none free", is_error=True)],
        )
        await keyless.fail("no hotel")
        print(
            json.dumps(
                {
                    "store": store.__file__,
                    "windowed": windowed,
                    "duplicates": [first.duplicate, second.duplicate, late.duplicate],
                    "ids": [first.id, second.id, late.id],
                    "keyless": [a.id, b.id, a.duplicate, b.duplicate],
                }
            )
        )


async def _twice(s, conversation: str, text: str, key: str | None):  # type: ignore[no-untyped-def]
    found = []

    async def submit() -> None:
        found.append(await s.begin_turn(conversation, text, idempotency_key=key))

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit)
        tg.start_soon(submit)
    return found


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2] if sys.argv[2] != "-" else None)
