"""Regenerates ``rows.json``, the representative data that tests/test_upgrade.py writes
into a database at every earlier schema version before migrating it to the current one.

It was made with turnstore at schema version 11 through its API (SQLite), then every
table's rows dumped, in the columns that version 1 already had (plus, for the tables of
versions 10 and 11, theirs). Times are unix seconds, moved back to ``EPOCH``. Run
``python -m tests.upgrade.make_rows`` only to add to it: the data is meant to stay what
turnstore of its time wrote.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import anyio

from store import AssistantMessage, Store, StoreConfig, ToolCall, ToolResult

#: Table -> (columns, the schema version that added the table)
TABLES: dict[str, tuple[tuple[str, ...], int]] = {
    "turnstore_conversations": (("id", "epoch"), 1),
    "turnstore_turns": (
        ("id", "conversation_id", "idempotency_key", "content_hash", "status", "epoch",
         "lease_owner", "lease_expires_at", "steps", "error", "started_at", "ended_at"),
        1,
    ),
    "turnstore_messages": (
        ("conversation_id", "position", "role", "turn_id", "step", "step_position",
         "tool_call_count", "content", "tool_call_id", "tool_name", "tool_arguments",
         "tool_call_data", "is_error"),
        1,
    ),
    "turnstore_session_marks": (("conversation_id", "seq", "kind", "position", "slot"), 10),
    "turnstore_session_writes": (("conversation_id", "write_id", "outcome"), 10),
    "turnstore_usage": (
        ("turn_id", "seq", "conversation_id", "step", "usage_id", "model", "prompt_tokens",
         "completion_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_nano_usd"),
        11,
    ),
}  # fmt: skip
#: Columns holding JSON, and times
JSON_COLUMNS = {"content", "tool_arguments", "tool_call_data"}
TIME_COLUMNS = {"lease_expires_at", "started_at", "ended_at"}
#: When the fixture's times start (unix seconds: 2023-11-14)
EPOCH = 1_700_000_000
#: Table order for inserting (parents first) and the order rows are compared in
KEYS = {
    "turnstore_conversations": ("id",),
    "turnstore_turns": ("id",),
    "turnstore_messages": ("conversation_id", "position"),
    "turnstore_session_marks": ("conversation_id", "seq"),
    "turnstore_session_writes": ("conversation_id", "write_id"),
    "turnstore_usage": ("turn_id", "seq"),
}


async def _write(url: str) -> None:
    config = StoreConfig(lease_seconds=1.0)
    async with Store.open(url, config=config) as store:
        # a finished turn: a step of two calls, a final answer, and its usage
        turn = await store.begin_turn("c-weather", "Weather in Paris and Rome?",
                                      idempotency_key="submit-1")  # fmt: skip
        calls = [
            ToolCall("call_paris", "get_weather", {"city": "Paris"}),
            ToolCall("call_rome", "get_weather", {"city": "Rome"},
                     provider_data={"thought_signature": "c2ln"}),
        ]  # fmt: skip
        await turn.commit_step(
            AssistantMessage("Checking both.", calls),
            [ToolResult("call_paris", "18C, cloudy"),
             ToolResult("call_rome", "timeout", is_error=True)],
        )  # fmt: skip
        await turn.record_usage(prompt_tokens=120, completion_tokens=30, cost_usd="0.00042",
                                step=1, model="m-1", usage_id="u-1")  # fmt: skip
        await turn.finish("Paris: 18C. Rome did not answer.")
        # a failed keyless turn with one step
        turn = await store.begin_turn("c-weather", "And Berlin?")
        await turn.commit_step(
            AssistantMessage("Looking.", [ToolCall("call_berlin", "get_weather",
                                                   {"city": "Berlin"})]),
            [ToolResult("call_berlin", [{"type": "text", "text": "12C"}])],
        )  # fmt: skip
        await turn.fail("the model timed out")
        # a turn whose process went away mid-turn: running, its lease long expired
        turn = await store.begin_turn("c-abandoned", "Summarise the report",
                                      idempotency_key="submit-2")  # fmt: skip
        await turn.commit_step(AssistantMessage("Reading it.", [
            ToolCall("call_read", "read_file", {"path": "report.md"})]),
            [ToolResult("call_read", "# Report\n...")])  # fmt: skip


def _dump(path: str) -> dict[str, list[dict[str, Any]]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        rows: dict[str, list[dict[str, Any]]] = {}
        for table, (columns, _) in TABLES.items():
            order = ", ".join(KEYS[table])
            found = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
            rows[table] = [dict(r) for r in found]
        return rows
    finally:
        conn.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/fixture.db"
        anyio.run(_write, f"sqlite+aiosqlite:///{path}")
        rows = _dump(path)
    # times moved back to November 2023, keeping their order and spacing: the abandoned
    # turn's lease has then run out whatever the clock of the machine that runs the tests
    times = [r[c] for r in rows["turnstore_turns"] for c in TIME_COLUMNS if r[c] is not None]
    shift = EPOCH - min(times)
    for row in rows["turnstore_turns"]:
        for column in TIME_COLUMNS:
            if row[column] is not None:
                row[column] = round(row[column] + shift, 6)
    # a session's clear mark and one of its writes (version 10): raw rows, as the session
    # integration writes them
    rows["turnstore_session_marks"] = [
        {"conversation_id": "c-weather", "seq": 1, "kind": "clear", "position": 5, "slot": None}
    ]
    rows["turnstore_session_writes"] = [
        {"conversation_id": "c-weather", "write_id": "w-1", "outcome": "ok"}
    ]
    out = Path(__file__).with_name("rows.json")
    out.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
