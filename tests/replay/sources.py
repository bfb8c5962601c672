"""Where the test inputs come from: the fixture file, and an Instatic table built from it."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

FIXTURE = Path(__file__).parent / "data" / "instatic-bricked-conversation.json"


def make_table(path: Path, table: str = "ai_messages") -> None:
    rows = json.loads(FIXTURE.read_text())["rows"]
    random.Random(7).shuffle(rows)
    rows.append({**rows[0], "id": "other", "conversation_id": "someone-else", "position": 1000})
    with sqlite3.connect(path) as db:
        db.execute(
            f"CREATE TABLE {table} (id TEXT PRIMARY KEY, conversation_id TEXT, position INTEGER,"
            " role TEXT, content_json TEXT, tool_call_id TEXT, tool_name TEXT, created_at TEXT)"
        )
        db.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            [
                (
                    r["id"],
                    r["conversation_id"],
                    r["position"],
                    r["role"],
                    json.dumps(r["content_json"]),
                    r["tool_call_id"],
                    r["tool_name"],
                )
                for r in rows
            ],
        )
