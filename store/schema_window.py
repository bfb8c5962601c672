"""The compatibility window: which schema versions this code runs against.

A release's code runs against its own schema and against the next release's, so that old
and new processes serve side by side during a rolling deploy (docs/operations.md,
Migrations and deploys):

* below: every migration this code uses must be applied, that is every one of its
  migrations but trailing contract ones (``sql.needed_version``); an older database is
  ``SchemaTooOld``;
* above: a newer database serves this code as long as no contract migration applied to
  it removed what this code uses. Each contract migration records the oldest code version
  it still serves (``-- turnstore: contract, code from K``), in the database, where older
  code reads it without knowing the migration; the database's floor is the highest of
  them. Code newer than the floor runs; older code is ``SchemaTooNew``.

Versions are a release's newest migration number: code "of version N" is a release whose
last migration is N.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import sql
from .errors import SchemaError, SchemaTooNew, SchemaTooOld


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What a database's ``turnstore_migrations`` says: the applied versions, their
    recorded checksums and the code floor each recorded (None: nothing recorded)."""

    versions: tuple[int, ...] = ()
    checksums: Mapping[int, str | None] = field(default_factory=dict)
    code_from: Mapping[int, int | None] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return max(self.versions, default=0)

    @property
    def floor(self) -> int:
        """The oldest code version this database serves. A baseline version (up to
        ``sql.BASELINE``) serves only its own code even where an older migrator recorded
        nothing; a later version counts with what it recorded (an expand one, nothing)."""
        floor = 0
        for version in self.versions:
            recorded = self.code_from.get(version)
            if recorded is None and version <= sql.BASELINE:
                recorded = version
            floor = max(floor, recorded or 0)
        return floor


def from_rows(rows: Sequence[Mapping[str, Any]]) -> SchemaState:
    """A state from ``SELECT * FROM turnstore_migrations`` rows (as mappings); a column
    that an older migrator never added reads as None."""
    return SchemaState(
        tuple(sorted(int(r["version"]) for r in rows)),
        {int(r["version"]): r.get("checksum") for r in rows},
        {int(r["version"]): r.get("code_from") for r in rows},
    )


def check_window(
    dialect: str, state: SchemaState, migrations: Sequence[sql.Migration] | None = None
) -> None:
    """Raise unless this code (``migrations``: by default its own) runs against a database
    in ``state``: ``SchemaError`` for an empty database, a gap, or an edited migration;
    ``SchemaTooOld``; ``SchemaTooNew``."""
    own = tuple(migrations if migrations is not None else sql.migrations(dialect))
    code = own[-1].version
    needed = max(m.version for m in own if m.kind != "contract")
    if not state.versions:
        raise SchemaTooOld(
            "the database has no turnstore schema: run `python -m store migrate --db URL` "
            "(or open the store with migrate=True)"
        )
    if list(state.versions) != list(range(1, state.version + 1)):
        raise SchemaError(
            f"the database's schema versions {list(state.versions)} have a gap: it was "
            "migrated by something other than turnstore; restore it from a backup"
        )
    sql.check_recorded(dialect, dict(state.checksums), own)
    if state.version < needed:
        raise SchemaTooOld(
            f"the database's schema is version {state.version}; this code (version {code}) "
            f"needs version {needed} or later: run `python -m store migrate --db URL` first "
            "(it only adds to the schema: the code running now keeps working)"
        )
    if state.floor > code:
        raise SchemaTooNew(
            f"the database's schema is version {state.version} and serves code of version "
            f"{state.floor} or later; this code is version {code} (a contract migration "
            f"removed something it uses): run a turnstore release of version {state.floor} "
            "or later"
        )
