"""The compatibility window of ``Store.open``: this code runs against its own schema and
against a newer one that only added (expand migrations), and refuses, with a typed error
saying what to do, a schema that lacks what it needs (``SchemaTooOld``) or one from which
a contract migration removed what it uses (``SchemaTooNew``). The later migrations here
are samples applied to a test's own schema; the code's own list is patched only where
the test says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import SchemaError, SchemaTooNew, SchemaTooOld, hooks, sql
from store.cli import main
from store.schema_window import SchemaState, check_window
from store.store import make_backend

from .conftest import Target

OWN = sql.migrations("postgres")
CODE = OWN[-1].version


def _later(dialect: str, kind: str, version: int = CODE + 1) -> sql.Migration:
    """A migration after this code's: an expand one adds a table, a contract one (serving
    code from ``CODE``, or only newer code) drops a column nothing uses."""
    if kind == "expand":
        text = "-- turnstore: expand\nCREATE TABLE turnstore_sample (id integer PRIMARY KEY);\n"
    else:
        code_from = CODE if kind == "contract" else version
        text = (
            f"-- turnstore: contract, code from {code_from}\n"
            "CREATE TABLE turnstore_sample_gone (id integer PRIMARY KEY, old text);\n"
            "ALTER TABLE turnstore_sample_gone DROP COLUMN old;\n"
        )
    return sql.Migration(version, f"sample_{kind.replace('-', '_')}", text)


async def _migrate(target: Target, *later: sql.Migration, upto: int | None = None) -> list[int]:
    backend = make_backend(target.url, schema=target.schema)
    try:
        return await backend.migrate(known=(*sql.migrations(target.kind), *later), upto=upto)
    finally:
        await backend.close()


async def test_a_newer_schema_that_only_added_serves_this_code(target: Target) -> None:
    await _migrate(target, _later(target.kind, "expand"))
    for migrate in (False, True):
        store = await target.open(migrate=migrate)
        try:
            assert await hooks.backend(store).applied_versions() == list(range(1, CODE + 2))
            turn = await store.begin_turn("c", "hello", idempotency_key=f"k-{migrate}")
            assert not turn.duplicate
            await turn.finish("hi")
        finally:
            await store.close()


async def test_a_contract_migration_serving_this_code_is_accepted(target: Target) -> None:
    await _migrate(target, _later(target.kind, "expand"), _later(target.kind, "contract", CODE + 2))
    store = await target.open(migrate=False)
    await store.close()
    backend = make_backend(target.url, schema=target.schema)
    try:
        state = await backend.schema_state()
    finally:
        await backend.close()
    assert state.floor == CODE  # recorded in the database, read by code that never saw it
    assert state.code_from[CODE + 2] == CODE and state.code_from[CODE + 1] is None


async def test_a_contract_migration_past_this_code_is_refused(target: Target) -> None:
    await _migrate(target, _later(target.kind, "contract-past"))
    for migrate in (False, True):
        with pytest.raises(SchemaTooNew, match=rf"release of version {CODE + 1} or later"):
            await target.open(migrate=migrate)


async def test_an_older_schema_is_refused_without_migrating_and_migrated_with(
    target: Target,
) -> None:
    needed = sql.needed_version(target.kind)  # all but trailing contract migrations
    await _migrate(target, upto=needed - 1)
    with pytest.raises(SchemaTooOld, match="python -m store migrate"):
        await target.open(migrate=False)
    store = await target.open(migrate=True)  # SQLite: everything; PostgreSQL: what it needs
    try:
        upto = CODE if target.kind == "sqlite" else needed
        assert await hooks.backend(store).applied_versions() == list(range(1, upto + 1))
    finally:
        await store.close()


def test_the_window_by_state_alone() -> None:
    own = sql.migrations("postgres")
    ok = SchemaState(tuple(range(1, CODE + 1)))
    check_window("postgres", ok)
    with pytest.raises(SchemaTooOld):
        check_window("postgres", SchemaState())
    with pytest.raises(SchemaError, match="gap"):
        check_window("postgres", SchemaState((1, 2, 4)))
    newer = SchemaState(tuple(range(1, CODE + 3)), code_from={CODE + 2: CODE + 1})
    with pytest.raises(SchemaTooNew):
        check_window("postgres", newer)
    # code that knows the contract migration is the newer code it serves
    knowing = (*own, _later("postgres", "expand"), _later("postgres", "contract-past", CODE + 2))
    check_window("postgres", newer, knowing)
    # code whose last migration is a contract one runs before it is applied
    trailing = (*own, _later("postgres", "contract"))
    check_window("postgres", ok, trailing)


@pytest.fixture
def trailing_contract(monkeypatch: pytest.MonkeyPatch, target: Target) -> Iterator[None]:
    """This code, as if its last migration were a contract one."""
    real = sql.migrations
    patched = {d: (*real(d), _later(d, "contract")) for d in sql.DIALECTS}
    monkeypatch.setattr(sql, "migrations", lambda dialect: patched[dialect])
    yield


async def test_migrate_true_on_postgresql_leaves_contract_migrations_to_the_command(
    target: Target, trailing_contract: None
) -> None:
    store = await target.open(migrate=True)
    try:
        applied = await hooks.backend(store).applied_versions()
        if target.kind == "postgres":
            # Store.open never removes anything: the contract migration waits for
            # `python -m store migrate` (Store.migrate), once per deploy
            needed = sql.needed_version("postgres")
            assert applied == list(range(1, needed + 1))
            assert await store.migrate() == list(range(needed + 1, CODE + 2))
        else:
            assert applied == list(range(1, CODE + 2))  # SQLite: everything, at open
        turn = await store.begin_turn("c", "hello")
        await turn.finish("hi")
    finally:
        await store.close()


def test_the_migrate_command_says_which_code_the_schema_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    assert main(["migrate", "--db", url, "--status"]) == 2  # reads: creates no file
    assert not (tmp_path / "cli.db").exists()
    assert main(["migrate", "--db", url, "--lock-timeout", "1", "--attempts", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    # the oldest code served: the newest contract migration's floor (up to the baseline,
    # each version served only its own code)
    floor = max(m.code_from or 0 for m in sql.migrations("sqlite"))
    assert out == [
        f"applied migrations {list(range(1, CODE + 1))}",
        f"schema version {CODE}, serves code of version {floor} or later; "
        f"this turnstore is version {CODE}",
    ]
    assert main(["migrate", "--db", url, "--status"]) == 0
    assert capsys.readouterr().out.splitlines() == out[1:]


def test_migrate_to_a_version_applies_the_migrations_up_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'to.db'}"
    needed = sql.needed_version("sqlite")
    assert main(["migrate", "--db", url, "--to", str(needed)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"applied migrations {list(range(1, needed + 1))}"
    )
    assert main(["migrate", "--db", url]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"applied migrations {list(range(needed + 1, CODE + 1))}"
    )
