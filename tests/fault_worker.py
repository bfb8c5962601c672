"""A separate OS process for the fault tests (tests/test_faults.py): the test stops, resumes
or kills it, and reads what it did on its stdout, one line per event.

python tests/fault_worker.py stall URL SCHEMA CONVERSATION LEASE
    Begin a turn, commit a step, checkpoint a half-done step (one result of two calls),
    print "checkpointed", then run the slow tool (its ticks stop while the process is
    stopped) until a line arrives on stdin; then try the step's commit and the turn's end,
    printing "<call> wrote" or "<call> <ErrorType>" for each.
python tests/fault_worker.py steps URL SCHEMA CONVERSATIONS LEASE
    One task per conversation commits steps back to back, each printed once committed:
    "committed <conversation> <turn id> <step> <prefix>". Runs until killed.
python tests/fault_worker.py hold-sqlite PATH CONVERSATION
    Open a raw sqlite3 connection, BEGIN IMMEDIATE, write a running turn with its user
    message and enough rows that SQLite spills uncommitted pages into the WAL, print
    "in transaction <WAL bytes>", and sleep until killed.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

import anyio

from store import AssistantMessage, Store, StoreConfig, StoreError, ToolCall, ToolResult

GHOST_TURN = "turn_ghost"


def say(line: str) -> None:
    print(line, flush=True)


def step(prefix: str, calls: int = 2) -> tuple[AssistantMessage, list[ToolResult]]:
    """The same shape as tests.helpers.step (this file runs outside the tests package)."""
    tool_calls = [ToolCall(f"{prefix}_{i}", "insertHtml", {"i": i}) for i in range(calls)]
    return (
        AssistantMessage(f"{prefix}: working", tool_calls),
        [ToolResult(c.id, f"<p>{c.id}</p>") for c in tool_calls],
    )


async def stall(url: str, schema: str | None, conversation: str, lease: float) -> None:
    config = StoreConfig(lease_seconds=lease)
    store = await Store.open(url, schema=schema, config=config, migrate=False)
    turn = await store.begin_turn(conversation, "build the page")
    await turn.commit_step(*step("first", 1))
    s = turn.step()
    s.text("inserting two sections")
    s.tool_call("call_a", "insertHtml", {"html": "<section>a</section>"})
    s.tool_call("call_b", "insertHtml", {"html": "<section>b</section>"})
    s.tool_result("call_a", "inserted a")
    await s.checkpoint()
    say("checkpointed")

    ticks = 0
    done = anyio.Event()

    async def slow_tool() -> None:  # call_b: works on until the parent says it is done
        nonlocal ticks
        while not done.is_set():
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow_tool)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        done.set()
    s.tool_result("call_b", "inserted b")
    message, results = s.closed("unreachable: both calls have results")
    for name, write in (
        ("commit_step", lambda: turn.commit_step(message, results)),
        ("finish", lambda: turn.finish("done")),
    ):
        try:
            await write()
        except StoreError as exc:
            say(f"{name} {type(exc).__name__}")
        except Exception as exc:  # not a turnstore error: the test reports it
            say(f"{name} raw {type(exc).__module__}.{type(exc).__name__}: {exc}")
        else:
            say(f"{name} wrote")
    await store.close()


async def steps(url: str, schema: str | None, conversations: list[str], lease: float) -> None:
    config = StoreConfig(lease_seconds=lease)
    store = await Store.open(url, schema=schema, config=config, migrate=False)

    async def one(conversation: str) -> None:
        turn = await store.begin_turn(conversation, f"go {conversation}")
        n = 0
        while True:
            prefix = f"{conversation}_s{n}"
            number = await turn.commit_step(*step(prefix))
            say(f"committed {conversation} {turn.id} {number} {prefix}")
            n += 1

    async with anyio.create_task_group() as tg:
        for conversation in conversations:
            tg.start_soon(one, conversation)


def hold_sqlite(path: str, conversation: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = 100")  # a small cache: uncommitted pages spill to the WAL
    conn.execute("BEGIN IMMEDIATE")
    position = conn.execute(
        "SELECT coalesce(max(position) + 1, 0) FROM turnstore_messages WHERE conversation_id = ?",
        (conversation,),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO turnstore_turns (id, conversation_id, content_hash, status, lease_owner,"
        " lease_expires_at, started_at) VALUES (?, ?, 'ghost', 'running', 'ghost', 1e12, 0)",
        (GHOST_TURN, conversation),
    )
    conn.execute(
        "INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step,"
        " step_position, content) VALUES (?, ?, 'user', ?, 0, ?, ?)",
        (conversation, position, GHOST_TURN, position, '[{"type":"text","text":"ghost"}]'),
    )
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
        " INSERT INTO turnstore_conversations (id) SELECT printf('ghost-%0200d', i) FROM n"
    )
    wal = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    say(f"in transaction {wal}")
    time.sleep(3600)  # the parent kills us here, the transaction open


def main() -> None:
    mode = sys.argv[1]
    if mode == "hold-sqlite":
        hold_sqlite(sys.argv[2], sys.argv[3])
        return
    url, schema = sys.argv[2], None if sys.argv[3] == "-" else sys.argv[3]
    if mode == "stall":
        anyio.run(stall, url, schema, sys.argv[4], float(sys.argv[5]))
    elif mode == "steps":
        anyio.run(steps, url, schema, sys.argv[4].split(","), float(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    os._exit(0)


if __name__ == "__main__":
    main()
