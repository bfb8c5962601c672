"""SQLite's plans for every named query stay bounded to a few rows of one conversation (or
one turn), before any ANALYZE and after one of a populated database.

A lookup of turns by conversation alone, through an index that holds every turn the
conversation ever had, reads them all: that cost grows with the conversation's age. Two
queries did this: ``next_in_line`` (run by every turn that ends), because SQLite uses a
partial index only where the query repeats the index's own condition, and
``recent_turn_with_content`` (every keyless submit), because SQLite preferred the
(conversation_id, idempotency_key) index. See schema/sqlite/queries.sql.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store import Store, sql

from .helpers import step

# The checker reads whole tables on purpose.
WHOLE_TABLE_READS = {"check_messages", "check_turns", "turns_by_status"}
# Erasing a conversation (store/erase.py) deletes all of it, on purpose; the erasure
# record is keyed by the conversation alone.
WHOLE_CONVERSATION = {"erase_messages", "erase_staged_steps", "erase_marks", "erase_writes",
                      "erase_turns", "erase_end",
                      # a conversation's usage sums read its usage rows (a few per turn)
                      "usage_total"}  # fmt: skip
# A descending seek on (conversation_id, position) stopped after its first row.
LAST_POSITION = "ORDER BY position DESC LIMIT 1"
# The same on a session's marks, for the next mark's number (agents_insert_mark).
LAST_MARK = "ORDER BY seq DESC LIMIT 1"
_SEARCH = re.compile(r"^SEARCH \S+ USING (?:COVERING )?INDEX (\S+) \((.*)\)$")


def _live_turn_indexes(conn: sqlite3.Connection) -> set[str]:
    """Partial indexes of turnstore_turns that hold only live (queued, running) turns."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'turnstore_turns'"
    ).fetchall()
    return {name for name, text in rows if text and re.search(r"WHERE status (IN|=)", text)}


def unbounded(conn: sqlite3.Connection, text: str) -> list[str]:
    """The steps of ``text``'s plan that read more than a key's rows: full scans, and
    searches bounded by the conversation alone (except through an index of live turns,
    and the last-position seek)."""
    params = {p: 1 for p in re.findall(r":(\w+)", text)}
    details = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + text, params)]
    live = _live_turn_indexes(conn)
    seeks_allowed = text.count(LAST_POSITION)
    mark_seeks_allowed = text.count(LAST_MARK)
    # idempotency_key IS NULL is an equality term to SQLite, but it matches every keyless
    # turn: not a key.
    keyless = "idempotency_key IS NULL" in text and "idempotency_key = :" not in text
    bad = []
    for detail in details:
        if detail.startswith("SCAN ") and detail != "SCAN CONSTANT ROW":
            bad.append(detail)
            continue
        match = _SEARCH.match(detail)
        terms = match.group(2).split(" AND ") if match else []
        if keyless and "idempotency_key=?" in terms:
            terms.remove("idempotency_key=?")
        if terms != ["conversation_id=?"]:
            continue
        index = match.group(1)
        if index in live:
            continue
        if seeks_allowed and "turnstore_messages" in index:
            seeks_allowed -= 1
            continue
        if mark_seeks_allowed and "turnstore_session_marks" in index:
            mark_seeks_allowed -= 1
            continue
        bad.append(detail)
    return bad


def _plans(conn: sqlite3.Connection) -> dict[str, list[str]]:
    return {
        name: bad
        for name, text in sql.queries("sqlite").items()
        if name not in WHOLE_TABLE_READS | WHOLE_CONVERSATION and (bad := unbounded(conn, text))
    }


async def _open_close(path: Path) -> None:
    store = await Store.open(f"sqlite:///{path}")
    await store.close()


async def _populated(path: Path) -> None:
    """One conversation with many ended turns (keyed and keyless), one more running."""
    store = await Store.open(f"sqlite:///{path}")
    try:
        for n in range(40):
            turn = await store.begin_turn(
                "c", f"prompt {n}", idempotency_key=f"k{n}" if n % 2 else None
            )
            await turn.commit_step(*step(f"{turn.id}_1"))
            await turn.finish()
        await store.begin_turn("c", "still running")
    finally:
        await store.close()


@contextmanager
def _connected(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    try:
        yield conn
    finally:
        conn.close()


async def test_named_queries_plan_bounded_lookups_before_any_analyze(tmp_path: Path) -> None:
    await _open_close(tmp_path / "plans.db")
    with _connected(tmp_path / "plans.db") as conn:
        assert _plans(conn) == {}


async def test_named_queries_plan_bounded_lookups_after_analyze(tmp_path: Path) -> None:
    await _populated(tmp_path / "plans.db")
    with _connected(tmp_path / "plans.db") as conn:
        conn.execute("ANALYZE")
        assert conn.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0
        assert _plans(conn) == {}


async def test_the_check_flags_a_read_of_every_turn_of_a_conversation(tmp_path: Path) -> None:
    await _open_close(tmp_path / "plans.db")
    with _connected(tmp_path / "plans.db") as conn:
        # next_in_line as it was: status = 'queued' alone does not select the partial index
        every_turn = (
            "SELECT id FROM turnstore_turns WHERE conversation_id = :conversation_id"
            " AND status = 'queued' ORDER BY created_at, rowid LIMIT 1"
        )
        assert unbounded(conn, every_turn)
        whole_history = "SELECT position FROM turnstore_messages WHERE conversation_id = :c"
        assert unbounded(conn, whole_history)
        assert unbounded(conn, "SELECT id FROM turnstore_turns")
        # recent_turn_with_content as it was: every keyless turn of the conversation
        keyless = (
            "SELECT id FROM turnstore_turns WHERE conversation_id = :conversation_id"
            " AND content_hash = :h AND idempotency_key IS NULL ORDER BY created_at DESC LIMIT 1"
        )
        assert unbounded(conn, keyless)
        last = f"SELECT position FROM turnstore_messages WHERE conversation_id = :c {LAST_POSITION}"
        assert unbounded(conn, last) == []
