"""Writing ``rows.json`` (see make_rows.py) into a database at any schema version, and
reading the same columns back, normalised, from any later one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from ..conftest import Target, asyncpg_dsn
from .make_rows import JSON_COLUMNS, KEYS, TABLES, TIME_COLUMNS

Rows = dict[str, list[dict[str, Any]]]


def fixture_rows() -> Rows:
    return json.loads(Path(__file__).with_name("rows.json").read_text())  # type: ignore[no-any-return]


def tables_at(version: int) -> list[str]:
    return [t for t, (_, since) in TABLES.items() if since <= version]


async def insert(target: Target, version: int, rows: Rows) -> None:
    """Every fixture row of the tables that exist at ``version``, in one transaction (the
    pairing checks are deferred to its COMMIT), as a plain client of that version would."""
    if target.kind == "postgres":
        conn = await asyncpg.connect(asyncpg_dsn(target.url))
        try:
            await conn.execute(f'SET search_path TO "{target.schema}"')
            async with conn.transaction():
                for table in tables_at(version):
                    for row in rows[table]:
                        columns = list(row)
                        values = [bool(row[c]) if c == "is_error" else row[c] for c in columns]
                        params = [_pg_param(c, i + 1) for i, c in enumerate(columns)]
                        await conn.execute(
                            f"INSERT INTO {table} ({', '.join(columns)}) "
                            f"VALUES ({', '.join(params)})",
                            *values,
                        )
        finally:
            await conn.close()
        return
    lite = sqlite3.connect(make_url(target.url).database or "", isolation_level=None)
    try:
        lite.execute("PRAGMA foreign_keys = ON")
        lite.execute("BEGIN")
        for table in tables_at(version):
            for row in rows[table]:
                columns = list(row)
                lite.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    [row[c] for c in columns],
                )
        lite.execute("COMMIT")
    finally:
        lite.close()


def _pg_param(column: str, n: int) -> str:
    if column in JSON_COLUMNS:
        return f"${n}::text::jsonb"
    if column in TIME_COLUMNS:
        return f"to_timestamp(${n}::float8)"
    return f"${n}"


async def read_back(target: Target, tables: list[str]) -> Rows:
    """The fixture's columns of ``tables``, in key order, normalised across dialects: JSON
    parsed, times in unix seconds to the millisecond, booleans as 0/1."""
    found: Rows = {}
    if target.kind == "postgres":
        conn = await asyncpg.connect(asyncpg_dsn(target.url))
        try:
            await conn.execute(f'SET search_path TO "{target.schema}"')
            for table in tables:
                columns, _ = TABLES[table]
                select = ", ".join(
                    f"{c}::text AS {c}"
                    if c in JSON_COLUMNS
                    else f"extract(epoch FROM {c})::float8 AS {c}"
                    if c in TIME_COLUMNS
                    else c
                    for c in columns
                )
                records = await conn.fetch(
                    f"SELECT {select} FROM {table} ORDER BY {', '.join(KEYS[table])}"
                )
                found[table] = [dict(r) for r in records]
        finally:
            await conn.close()
    else:
        lite = sqlite3.connect(make_url(target.url).database or "")
        lite.row_factory = sqlite3.Row
        try:
            for table in tables:
                columns, _ = TABLES[table]
                records = lite.execute(
                    f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(KEYS[table])}"
                )
                found[table] = [dict(r) for r in records]
        finally:
            lite.close()
    return {table: [normalise(r) for r in rows] for table, rows in found.items()}


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for column, value in row.items():
        if value is not None and column in JSON_COLUMNS:
            value = json.loads(value)
        elif value is not None and column in TIME_COLUMNS:
            value = round(float(value), 3)
        elif isinstance(value, bool):
            value = int(value)
        out[column] = value
    return out
