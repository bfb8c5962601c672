"""Database URLs: one URL from the command line, converted for each client, and the per-run
namespace (a PostgreSQL schema, or a SQLite file beside the given one) each system owns."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Backend = Literal["postgres", "sqlite"]

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class DbTarget:
    """A parsed ``--db`` URL."""

    backend: Backend
    url: str  # as given
    asyncpg_dsn: str | None = None  # postgresql://... for asyncpg (PostgreSQL only)
    sqlite_path: Path | None = None  # the database file (SQLite only)

    def sqlalchemy_url(self, schema: str) -> str:
        """An async SQLAlchemy URL for ``schema``'s namespace."""
        if self.backend == "postgres":
            assert self.asyncpg_dsn is not None
            return "postgresql+asyncpg" + self.asyncpg_dsn[self.asyncpg_dsn.index(":") :]
        return f"sqlite+aiosqlite:///{self.sqlite_file(schema)}"

    def sqlite_file(self, schema: str) -> Path:
        """SQLite has no schemas: each system gets its own file beside the given one."""
        assert self.sqlite_path is not None
        check_schema_name(schema)
        p = self.sqlite_path
        return p.with_name(f"{p.stem}.{schema}{p.suffix or '.db'}")


#: the server the benchmarks use unless told otherwise (``--db``)
DEFAULT_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def parse_db_url(url: str) -> DbTarget:
    """Accept ``postgresql://``, ``postgres://``, ``postgresql+asyncpg://`` (SQLAlchemy style),
    ``sqlite:///path`` and ``sqlite+aiosqlite:///path``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))
        return DbTarget("postgres", url, asyncpg_dsn=dsn)
    if base == "sqlite":
        # sqlite:///relative.db -> path "/relative.db"[1:]; sqlite:////abs.db -> "//abs.db"[1:]
        raw = url.split("://", 1)[1]
        path = raw[1:] if raw.startswith("/") else raw
        if not path or path == ":memory:":
            raise ValueError("the SQLite benchmark needs a file database, not :memory:")
        return DbTarget("sqlite", url, sqlite_path=Path(path).expanduser().resolve())
    raise ValueError(f"unsupported database URL {url!r}: use postgresql:// or sqlite:///")


def check_schema_name(schema: str) -> str:
    """Schema names are interpolated into DDL, so only plain identifiers are accepted."""
    if not _SCHEMA_RE.match(schema) or schema == "public":
        raise ValueError(f"bad benchmark schema name {schema!r}")
    return schema


def schema_name(system: str, run_id: str) -> str:
    """``bench_<system>_<run id>``, e.g. ``bench_raw_locked_4242``."""
    slug = re.sub(r"[^a-z0-9]+", "_", system.lower()).strip("_")
    return check_schema_name(f"bench_{slug}_{run_id}"[:63])


def remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def create_pg_schema(dsn: str, schema: str) -> None:
    """A fresh, empty schema (a leftover of a crashed run with the same name is dropped)."""
    import asyncpg

    check_schema_name(schema)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    finally:
        await conn.close()


async def drop_pg_schema(dsn: str, schema: str) -> None:
    import asyncpg

    check_schema_name(schema)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()
