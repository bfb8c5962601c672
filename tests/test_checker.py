"""The checker finds what the write path and the constraints prevent, when a client gets
around them (SQLite without PRAGMA foreign_keys, PostgreSQL with triggers disabled)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import anyio

from store import Store, hooks
from store.checker import _check_turns, check

from .conftest import Target
from .helpers import step

ROOT = str(Path(__file__).parents[1])


async def _cli(target: Target, *args: str) -> tuple[int, str]:
    schema = ["--schema", target.schema] if target.schema else []
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "store", *args, "--db", target.url, *schema],
            cwd=ROOT,
            check=False,
        )
    return result.returncode, result.stdout.decode()


def _row(
    position: int,
    role: str,
    step: int,
    step_position: int,
    calls: int = 0,
    call_id: str | None = None,
    turn: str = "t_legacy",
) -> str:
    tool = f"'{call_id}', 'insertHtml', '{{}}'" if call_id else "NULL, NULL, NULL"
    return (
        "INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step, "
        "step_position, tool_call_count, content, tool_call_id, tool_name, tool_arguments) "
        f"VALUES ('bricked', {position}, '{role}', '{turn}', {step}, {step_position}, {calls}, "
        f"'[]', {tool});"
    )


async def _write_corruption(target: Target) -> None:
    """The bug report's shape: a double-submitted prompt, results with no call, a call
    with no result, a gap, bypassing the foreign keys the way a careless client could."""
    bypass = (
        "SET session_replication_role = replica;"
        if target.kind == "postgres"
        else "PRAGMA foreign_keys = OFF;"
    )
    now = "now()" if target.kind == "postgres" else "0"
    await target.raw_execute(
        bypass
        + "INSERT INTO turnstore_conversations (id) VALUES ('bricked');"
        + "INSERT INTO turnstore_turns (id, conversation_id, content_hash, status, lease_owner,"
        f" lease_expires_at, steps) VALUES ('t_legacy', 'bricked', 'h', 'finished', 'x', {now}, 2);"
        + _row(0, "user", 0, 0)
        + _row(1, "user", 0, 1)  # the double submit
        + _row(2, "tool", 1, 1, 1, "call_37ac")  # orphan: its step opens with a user row
        + _row(3, "assistant", 2, 3, 2)  # two calls ...
        + _row(4, "tool", 2, 3, 2, "call_ok")  # ... one result
        + _row(6, "user", 0, 6)  # gap at 5
    )


async def test_a_clean_store_passes(store: Store, target: Target) -> None:
    turn = await store.begin_turn("c", "go")
    await turn.commit_step(*step("a"))
    await turn.finish()
    code, out = await _cli(target, "check")
    assert code == 0, out
    assert "no violations" in out


async def test_corruption_is_found_and_reported(store: Store, target: Target) -> None:
    await _write_corruption(target)
    report = await check(hooks.backend(store))
    kinds = report.counts()
    assert kinds["orphan_result"] == 1
    assert kinds["unanswered_call"] == 1
    assert kinds["position_gap"] >= 1
    assert kinds["user_message_count"] == 1  # two user messages in one turn
    code, out = await _cli(target, "check", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["ok"] is False
    assert data["violations_by_kind"] == kinds


def test_turn_level_invariants() -> None:
    turns = [
        SimpleNamespace(id="a", idempotency_key="k", status="running", steps=0,
                        keeps_message=False),
        SimpleNamespace(id="b", idempotency_key="k", status="running", steps=0,
                        keeps_message=True),  # started, yet still holding its message
        SimpleNamespace(id="q", idempotency_key=None, status="queued", steps=0,
                        keeps_message=True),  # waiting: fine
    ]  # fmt: skip
    rows = [
        SimpleNamespace(turn_id="a", role="user", step=0),
        SimpleNamespace(turn_id="b", role="user", step=0),
    ]
    kinds = [v.kind for v in _check_turns("c", turns, rows)]
    assert sorted(kinds) == [
        "duplicate_idempotency_key", "pending_message_kept", "several_running_turns",
    ]  # fmt: skip
