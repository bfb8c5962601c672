"""Loads the SQL that lives in ``schema/``: numbered migrations and named queries.

``schema/<dialect>/NNNN_name.sql`` are migrations, applied in order;
``schema/<dialect>/queries.sql`` holds every query the library runs, each introduced by a
``-- name: <query_name>`` line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DIALECTS = ("postgres", "sqlite")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_QUERY_NAME = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


def schema_dir() -> Path:
    """The folder holding the SQL: inside the installed package, or the repository's
    top-level ``schema/`` when running from a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schema", here.parent / "schema"):
        if (candidate / "postgres").is_dir():
            return candidate
    raise FileNotFoundError("turnstore's schema/ folder was not found next to the package")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the migration's text (line endings normalised): recorded when it is
        applied, so that a file edited afterwards is noticed, not silently skipped."""
        text = self.sql.replace("\r\n", "\n")
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def has_statements(self) -> bool:
        """False for a version that changes nothing on its dialect (comments only): it is
        recorded as applied without running anything."""
        return any(
            line.strip() and not line.strip().startswith("--") for line in self.sql.splitlines()
        )


@cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    folder = schema_dir() / dialect
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{folder}: migrations must be numbered 0001, 0002, ... without gaps")
    return tuple(found)


@cache
def queries(dialect: str) -> dict[str, str]:
    text = (schema_dir() / dialect / "queries.sql").read_text()
    pieces = _QUERY_NAME.split(text)
    # pieces = [preamble, name1, body1, name2, body2, ...]
    named = {}
    for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
        sql = "\n".join(
            line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
        ).strip()
        named[name] = sql.rstrip(";")
    return named


def check_recorded(dialect: str, recorded: dict[int, str | None]) -> list[Migration]:
    """Compare the checksums a database recorded for ``dialect`` (by version; None: applied
    before checksums were recorded) with the files; raise ``SchemaError`` for an edited
    one. Returns the applied migrations whose checksum is still to be recorded."""
    from .errors import SchemaError

    adopt = []
    for migration in migrations(dialect):
        if migration.version not in recorded:
            continue
        stored = recorded[migration.version]
        if stored is None:
            adopt.append(migration)
        elif stored != migration.checksum:
            raise SchemaError(
                f"migration {migration.version:04d}_{migration.name}.sql differs from the one "
                "this database applied (its checksum changed): a migration must never be "
                "edited once released; restore it and put the change in a new migration"
            )
    return adopt
