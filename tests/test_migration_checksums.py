"""Each applied migration's checksum is recorded; a migration file edited after it was
applied is refused by the next migrate, never silently skipped."""

from __future__ import annotations

import pytest

from store import SchemaError, hooks, sql

from .conftest import Target


async def _recorded(target: Target) -> dict[int, str | None]:
    store = await target.open()
    try:
        async with hooks.backend(store).read() as tx:
            rows = await tx.conn.exec_driver_sql(  # type: ignore[attr-defined]
                "SELECT version, checksum FROM turnstore_migrations"
            )
            return {r[0]: r[1] for r in rows}
    finally:
        await store.close()


def _opened(dialect: str) -> dict[int, str | None]:
    """The checksums of what Store.open(migrate=True) applies: every migration on SQLite,
    all but trailing contract ones on PostgreSQL."""
    upto = sql.code_version(dialect) if dialect == "sqlite" else sql.needed_version(dialect)
    return {m.version: m.checksum for m in sql.migrations(dialect) if m.version <= upto}


async def test_checksums_are_recorded_and_an_edited_migration_is_refused(
    target: Target,
) -> None:
    recorded = await _recorded(target)
    dialect = "postgres" if target.kind == "postgres" else "sqlite"
    assert recorded == _opened(dialect)

    # as if 0003 had been edited since: the database's record no longer matches the file
    await target.raw_execute("UPDATE turnstore_migrations SET checksum = 'x' WHERE version = 3")
    with pytest.raises(SchemaError, match=r"0003_.*must never be edited"):
        await target.open()


async def test_a_database_migrated_before_checksums_adopts_them(target: Target) -> None:
    await _recorded(target)
    await target.raw_execute("UPDATE turnstore_migrations SET checksum = NULL")
    recorded = await _recorded(target)  # opening migrates: the checksums are filled in
    dialect = "postgres" if target.kind == "postgres" else "sqlite"
    assert recorded == _opened(dialect)
