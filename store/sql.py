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
from typing import Literal

DIALECTS = ("postgres", "sqlite")
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

#: The last migration written before the expand/contract rules (docs/operations.md,
#: Migrations and deploys). Versions up to it were released with code that required the
#: exact schema version, so each of them serves only the code of its own version. Every
#: later migration declares its kind in a header line (``migration_kind``), and is linted
#: for long locks (``store.migration_lint``, tests/test_migration_lint.py).
BASELINE = 11

Kind = Literal["baseline", "expand", "contract"]
_DIRECTIVE = re.compile(r"^--\s*turnstore:\s*(.*?)\s*$")
_CONTRACT = re.compile(r"^contract,\s*code from (\d+)$")
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
    def directives(self) -> tuple[str, ...]:
        """The ``-- turnstore: ...`` lines of the file's leading comment block."""
        found = []
        for line in self.sql.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("--"):
                break
            match = _DIRECTIVE.match(stripped)
            if match:
                found.append(match[1])
        return tuple(found)

    @property
    def transactional(self) -> bool:
        """False for a migration headed ``-- turnstore: no-transaction``: its statements
        (``CREATE INDEX CONCURRENTLY``) cannot run inside a transaction, so on PostgreSQL
        they run one by one, each idempotent, and the version is recorded after the last."""
        return "no-transaction" not in self.directives

    @property
    def kind(self) -> Kind:
        """``expand`` (adds; code of earlier versions keeps working), ``contract`` (removes
        or changes something earlier code used: ``-- turnstore: contract, code from K``),
        or ``baseline`` (a version up to ``BASELINE``, before these rules)."""
        if self.version <= BASELINE:
            return "baseline"
        kinds = [d for d in self.directives if d == "expand" or d.startswith("contract")]
        if len(kinds) != 1 or (kinds[0] != "expand" and not _CONTRACT.match(kinds[0])):
            raise RuntimeError(
                f"migration {self.version:04d}_{self.name}.sql must say what it is in one "
                "header line: `-- turnstore: expand` (it only adds: code of earlier versions "
                "keeps working) or `-- turnstore: contract, code from K` (it removes or "
                "changes something that code of versions before K uses)"
            )
        return "expand" if kinds[0] == "expand" else "contract"

    @property
    def code_from(self) -> int | None:
        """The oldest code version (a release's newest migration) that the database still
        serves once this migration is applied, when the migration raises it: its own
        version for a baseline migration, K for a contract one, None for an expand one
        (it leaves the floor where it was)."""
        kind = self.kind
        if kind == "baseline":
            return self.version
        if kind == "expand":
            return None
        for directive in self.directives:
            match = _CONTRACT.match(directive)
            if match:
                return int(match[1])
        raise AssertionError("unreachable: kind() found the contract line")

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
    for migration in found:
        code_from = migration.code_from  # raises for a later migration without its kind
        if code_from is not None and code_from > migration.version:
            raise RuntimeError(
                f"{folder}/{migration.version:04d}_{migration.name}.sql: a contract migration "
                f"cannot serve code from version {code_from}, newer than itself"
            )
    return tuple(found)


def code_version(dialect: str) -> int:
    """The schema version this code was written for: its newest migration."""
    return migrations(dialect)[-1].version


def needed_version(dialect: str) -> int:
    """The oldest schema version this code runs against: every migration but trailing
    contract ones (which remove what this code no longer uses) must be applied."""
    return max(m.version for m in migrations(dialect) if m.kind != "contract")


def split_postgres(script: str) -> list[str]:
    """Split a PostgreSQL script into its statements, comments dropped, respecting quoted
    strings, quoted names and dollar-quoted bodies (``$$ ... $$``, ``$fn$ ... $fn$``)."""
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(script)
    while i < n:
        ch = script[i]
        if script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end < 0 else end
            continue
        if script.startswith("/*", i):
            end = script.find("*/", i + 2)
            i = n if end < 0 else end + 2
            current.append(" ")
            continue
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if script[end] == ch:
                    if end + 1 < n and script[end + 1] == ch:  # doubled quote
                        end += 2
                        continue
                    break
                end += 1
            current.append(script[i : end + 1])
            i = end + 1
            continue
        if ch == "$":
            tag = re.match(r"\$[A-Za-z_]*\$", script[i:])
            if tag:
                end = script.find(tag[0], i + len(tag[0]))
                end = n if end < 0 else end + len(tag[0])
                current.append(script[i:end])
                i = end
                continue
        if ch == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    statement = "".join(current).strip()
    if statement:
        statements.append(statement)
    return statements


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


def check_recorded(
    dialect: str,
    recorded: dict[int, str | None],
    known: tuple[Migration, ...] | None = None,
) -> list[Migration]:
    """Compare the checksums a database recorded for ``dialect`` (by version; None: applied
    before checksums were recorded) with the files (``known``: by default this code's);
    raise ``SchemaError`` for an edited one. Versions the code does not know (a newer
    database) are not compared. Returns the applied migrations whose checksum is still to
    be recorded."""
    from .errors import SchemaError

    adopt = []
    for migration in known if known is not None else migrations(dialect):
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
