"""The rules every PostgreSQL migration after the baseline (``sql.BASELINE``) keeps, so that
applying it never holds a long lock on a big table and never breaks the code of the
release before it (docs/operations.md, Migrations and deploys). tests/test_migration_lint.py
runs ``lint`` on every such migration, and on bad samples, which it must flag.

What is flagged, and what to write instead:

* ``CREATE INDEX`` on an existing table without ``CONCURRENTLY`` (it blocks writes for the
  whole build): ``CREATE INDEX CONCURRENTLY IF NOT EXISTS`` in a ``-- turnstore:
  no-transaction`` migration; ``DROP INDEX`` likewise ``CONCURRENTLY IF EXISTS``. A
  no-transaction migration holds nothing else, and each of its statements is idempotent
  (the runner may run it again after a failure).
* ``ADD FOREIGN KEY`` / ``ADD CHECK`` (or a column ``REFERENCES``) on an existing table
  without ``NOT VALID`` (it checks every row under a lock that blocks writes): add it
  ``NOT VALID`` and ``VALIDATE CONSTRAINT`` it in a later migration, which checks the rows
  under a lock that lets writes through. Never both in one migration: the first lock is
  held to its end.
* ``ALTER COLUMN ... TYPE`` (rewrites the table under an exclusive lock), an added column
  that is ``GENERATED ... STORED`` or has a volatile default (the same rewrite), ``VACUUM
  FULL``, ``CLUSTER``, ``LOCK TABLE``, ``REINDEX`` without ``CONCURRENTLY``: add a new
  column (expand), write both, backfill in batches, switch reads, drop the old one later.
* ``SET NOT NULL`` on an existing column without a validated ``CHECK (col IS NOT NULL)``
  from an earlier migration (it scans the table under an exclusive lock; with the check
  validated, PostgreSQL skips the scan).
* Removing or renaming anything (``DROP`` of a table, column, function, type, trigger,
  view or constraint, ``RENAME``) in a migration not declared ``-- turnstore: contract,
  code from K``: the release before still uses it. A contract migration names the oldest
  code version that does not use what it removes (``K``), older than itself, and ships a
  release after the one whose code stopped using it. The removed names must not appear in
  this code's queries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from . import sql

_WS = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Finding:
    version: int
    rule: str
    statement: str

    def __str__(self) -> str:
        return f"{self.version:04d}: {self.rule}: {self.statement[:120]}"


def _norm(statement: str) -> str:
    return _WS.sub(" ", statement).strip().upper()


_IDENT = r'"?([A-Za-z_][\w$]*)"?'
_CREATE_TABLE = re.compile(rf"^CREATE (?:UNLOGGED )?TABLE (?:IF NOT EXISTS )?{_IDENT}")
_CREATE_INDEX = re.compile(
    rf"^CREATE (?:UNIQUE )?INDEX (CONCURRENTLY )?(IF NOT EXISTS )?(?:{_IDENT} )?ON (?:ONLY )?"
    rf"{_IDENT}"
)
_DROP_INDEX = re.compile(rf"^DROP INDEX (CONCURRENTLY )?(IF EXISTS )?{_IDENT}")
_ALTER_TABLE = re.compile(rf"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?{_IDENT} (.*)$", re.DOTALL)
_ADD_CONSTRAINT = re.compile(
    rf"\bADD (?:CONSTRAINT {_IDENT} )?(FOREIGN KEY|CHECK)\b(.*?)(?=, ADD |, ALTER |, DROP |$)",
    re.DOTALL,
)
_ADD_COLUMN = re.compile(
    r"\bADD (?:COLUMN )?(?:IF NOT EXISTS )?(?!CONSTRAINT\b|FOREIGN\b|CHECK\b|UNIQUE\b|"
    r"PRIMARY\b)(.*?)(?=, ADD |, ALTER |, DROP |$)",
    re.DOTALL,
)
_VALIDATE = re.compile(rf"\bVALIDATE CONSTRAINT {_IDENT}")
_SET_NOT_NULL = re.compile(rf"\bALTER (?:COLUMN )?{_IDENT} SET NOT NULL\b")
_VOLATILE_DEFAULT = re.compile(
    r"\bDEFAULT\s*\(?\s*(RANDOM|CLOCK_TIMESTAMP|GEN_RANDOM_UUID|UUID_GENERATE_V4|NEXTVAL)\b"
)
_DROP_OBJECT = re.compile(
    rf"^DROP (TABLE|FUNCTION|PROCEDURE|TYPE|TRIGGER|VIEW|MATERIALIZED VIEW|SEQUENCE|SCHEMA)"
    rf" (?:IF EXISTS )?{_IDENT}"
)
_DROP_IN_ALTER = re.compile(rf"\bDROP (?:COLUMN |CONSTRAINT )(?:IF EXISTS )?{_IDENT}")
_RENAME = re.compile(rf"\bRENAME (?:COLUMN |CONSTRAINT )?(?:{_IDENT} )?TO\b")
_NOT_NULL_CHECK = re.compile(rf"^\(?\s*{_IDENT} IS NOT NULL\s*\)?")
_CREATED = re.compile(
    rf"^CREATE (?:OR REPLACE )?(?:UNIQUE )?(?:CONSTRAINT )?"
    rf"(?:TABLE|TRIGGER|VIEW|INDEX) (?:CONCURRENTLY )?"
    rf"(?:IF NOT EXISTS )?{_IDENT}"
)


@dataclass
class _Seen:
    """What earlier migrations after the baseline did, that a later one may rely on."""

    not_valid_checks: dict[str, tuple[str, str]]  # constraint -> (table, column)
    validated: set[str]


def lint(
    migrations: Sequence[sql.Migration],
    *,
    after: int = sql.BASELINE,
    queries: str | None = None,
) -> list[Finding]:
    """The findings of every PostgreSQL migration of ``migrations`` newer than ``after``
    (in order: a migration may rely on an earlier one's validated check). ``queries``: the
    text this code runs (default: schema/postgres/queries.sql), in which names a contract
    migration removes must not appear."""
    if queries is None:
        queries = (sql.schema_dir() / "postgres" / "queries.sql").read_text()
    seen = _Seen({}, set())
    findings: list[Finding] = []
    for migration in migrations:
        if migration.version > after:
            findings.extend(_lint_one(migration, seen, queries.upper()))
    return findings


def _lint_one(migration: sql.Migration, seen: _Seen, queries: str) -> list[Finding]:
    found: list[Finding] = []

    def flag(rule: str, statement: str) -> None:
        found.append(Finding(migration.version, rule, statement))

    try:
        kind = migration.kind
        code_from = migration.code_from
    except RuntimeError as exc:
        flag(str(exc), migration.name)
        return found
    if kind == "contract" and code_from is not None and code_from >= migration.version:
        flag("a contract migration serves code older than itself (code from K < version)", "")
    statements = [(s, _norm(s)) for s in sql.split_postgres(migration.sql)]
    new_tables = {m[1] for _, n in statements if (m := _CREATE_TABLE.match(n))}
    added_here: set[str] = set()
    removed: list[str] = []

    for raw, n in statements:
        if not migration.transactional:
            index = _CREATE_INDEX.match(n)
            drop = _DROP_INDEX.match(n)
            if index and index[1] and index[2] and index[3]:
                continue
            if drop and drop[1] and drop[2]:
                removed.append(drop[3])
                continue
            flag(
                "a no-transaction migration holds only CREATE [UNIQUE] INDEX CONCURRENTLY IF "
                "NOT EXISTS <name> and DROP INDEX CONCURRENTLY IF EXISTS <name>",
                raw,
            )
            continue
        if "CONCURRENTLY" in n and (n.startswith("CREATE") or n.startswith("DROP INDEX")):
            flag("CONCURRENTLY cannot run in a transaction: head the file no-transaction", raw)
            continue
        if (index := _CREATE_INDEX.match(n)) and index[4] not in new_tables:
            flag("CREATE INDEX on an existing table without CONCURRENTLY", raw)
        if (drop := _DROP_INDEX.match(n)) is not None:
            flag("DROP INDEX without CONCURRENTLY", raw)
            removed.append(drop[3])
        if n.startswith(("VACUUM FULL", "CLUSTER", "LOCK ")) or (
            n.startswith("REINDEX") and "CONCURRENTLY" not in n
        ):
            flag("a statement that holds an exclusive lock for the whole table", raw)
        if (dropped := _DROP_OBJECT.match(n)) is not None:
            removed.append(dropped[2])
        alter = _ALTER_TABLE.match(n)
        if alter is None:
            continue
        table, actions = alter[1], alter[2]
        existing = table not in new_tables
        for match in _ADD_CONSTRAINT.finditer(actions):
            name, what, rest = match[1], match[2], match[3]
            if name:
                added_here.add(name)
            if existing and "NOT VALID" not in rest:
                flag(f"ADD {what} on an existing table without NOT VALID", raw)
            elif what == "CHECK" and name:
                checked = _NOT_NULL_CHECK.match(rest.strip())
                if checked:
                    seen.not_valid_checks[name] = (table, checked[1])
        for match in _ADD_COLUMN.finditer(actions):
            column = match[1]
            if not existing:
                continue
            if " REFERENCES " in f" {column} " and "NOT VALID" not in column:
                flag("a new column REFERENCES another table: checked under a lock", raw)
            if "GENERATED" in column and "STORED" in column:
                flag("a new GENERATED ... STORED column rewrites the table", raw)
            if _VOLATILE_DEFAULT.search(column):
                flag("a new column with a volatile default rewrites the table", raw)
        if re.search(r"\bALTER (?:COLUMN )?\S+ (?:SET DATA )?TYPE\b", actions):
            flag("ALTER COLUMN ... TYPE rewrites the table under an exclusive lock", raw)
        for match in _VALIDATE.finditer(actions):
            if match[1] in added_here:
                flag("VALIDATE in the migration that adds the constraint: its lock is held", raw)
            seen.validated.add(match[1])
        for match in _SET_NOT_NULL.finditer(actions):
            if existing and not any(
                check == (table, match[1]) and name in seen.validated
                for name, check in seen.not_valid_checks.items()
                if name not in added_here
            ):
                flag(
                    "SET NOT NULL without a validated CHECK (column IS NOT NULL) added by an "
                    "earlier migration",
                    raw,
                )
        removed.extend(m[1] for m in _DROP_IN_ALTER.finditer(actions))
        if _RENAME.search(actions) and kind != "contract":
            flag("RENAME in a migration not declared contract: old code uses the name", raw)
    # dropped and created again in the same migration: replaced, not removed (not for a
    # function or type: one created again may have another signature or shape, and code
    # that calls the old one breaks; CREATE OR REPLACE keeps a signature)
    created = {m[1] for _, n in statements if (m := _CREATED.match(n))}
    created |= added_here | {
        m[1].split(" ")[0].strip('"')
        for _, n in statements
        if (alter := _ALTER_TABLE.match(n))
        for m in _ADD_COLUMN.finditer(alter[2])
    }
    for name in removed:
        if name in created:
            continue
        if kind != "contract":
            flag(f"removes {name} in a migration not declared contract", name)
        elif re.search(rf"\b{re.escape(name)}\b", queries):
            flag(f"removes {name}, which this code's queries still use", name)
    return found
