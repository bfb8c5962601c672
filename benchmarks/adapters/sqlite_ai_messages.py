"""The ``ai_messages`` table on SQLite, shared by the SQLite variants of raw, raw-locked and
naive: a fresh WAL database file per system, connections, statements and a bulk loader."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from ..dbtarget import parse_db_url, remove_sqlite_files
from . import instatic_rows as rows_
from .base import PreloadTurn

INSERT = f"INSERT INTO ai_messages ({', '.join(rows_.COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
NEXT_POSITION = "SELECT coalesce(max(position), -1) + 1 FROM ai_messages WHERE conversation_id = ?"
PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA busy_timeout = 5000")


def fresh_database(url: str, schema: str) -> Path:
    """A new database file for this system (SQLite has no schemas) with ``ai_messages``."""
    path = parse_db_url(url).sqlite_file(schema)
    remove_sqlite_files(path)
    with closing(connect(path)) as conn:
        conn.execute(rows_.SQLITE_DDL)
    return path


def connect(path: Path) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit), usable from any one thread at a
    time."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def bulk_preload(path: Path, turns: Iterable[PreloadTurn], next_pos: dict[str, int]) -> None:
    with closing(connect(path)) as conn:
        conn.execute("BEGIN")
        conn.executemany(INSERT, rows_.preload_records(turns, next_pos))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
