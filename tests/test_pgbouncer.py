"""Behind PgBouncer in transaction-pooling mode (``?pgbouncer=transaction``): the store's
guarantees through a PgBouncer of the test's own, in front of the test server, whose two
server connections every client shares (a client's consecutive transactions may run on
either). PgBouncer 1.18 (Debian's) refuses the startup parameters a direct connection sends
and carries no prepared statement from one transaction to the next; the store sets its
settings with ``SET LOCAL`` in every transaction and uses unnamed statements only
(store/backends/postgres.py, docs/operations.md "Behind PgBouncer").

pgbouncer must be installed (Debian: ``apt-get install pgbouncer``; .ci/run installs it):
without it these tests FAIL, they never skip.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from store import InvalidMessage, LeaseLost, SchemaError, Store, StoreConfig, hooks, sql
from store.backends.postgres import as_record, pgbouncer_connect_args
from store.backends.tx import EngineTx, Tx
from store.soak.pgserver import free_port
from store.store import make_backend

from .conftest import PG_URL, Target, asyncpg_dsn
from .helpers import assert_clean, count_rows, step, wait_until
from .system_programs import debian_program
from .test_plans import APPLY, _claim, _end, _step, unbounded
from .test_unknown_outcomes import script_writes, steps_in_history

PROVIDERS = ("openai-chat", "openai-responses", "anthropic", "gemini")
SHORT_LEASE = StoreConfig(lease_seconds=0.3, poll_max_seconds=0.02)


@dataclass(frozen=True)
class Bouncer:
    """A running PgBouncer of this module's own, in front of the test server."""

    port: int
    directory: Path

    @property
    def url(self) -> str:
        """The store's URL through it."""
        server = make_url(PG_URL)
        through = server.set(host="127.0.0.1", port=self.port, query={})
        url = through.render_as_string(hide_password=False)
        return f"{url}?pgbouncer=transaction"

    @property
    def dsn(self) -> str:
        """A plain client's DSN through it."""
        return asyncpg_dsn(self.url.split("?", 1)[0])

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _config(port: int, directory: Path) -> str:
    server = make_url(PG_URL)
    return f"""\
[databases]
{server.database} = host={server.host or "127.0.0.1"} port={server.port or 5432} \
dbname={server.database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
; two server connections for every client of the test: consecutive transactions of one
; client run on either, and clients wait for one
default_pool_size = 2
min_pool_size = 0
reserve_pool_size = 0
max_db_connections = 2
max_client_conn = 500
; a client left waiting for a server connection this long fails (a hang guard)
query_wait_timeout = 60
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[Bouncer]:
    """PgBouncer on a free port of 127.0.0.1, run as the postgres user when the tests run
    as root (PgBouncer refuses root), stopped at the end of the module."""
    if PG_URL == "skip":
        pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")
    program = debian_program("pgbouncer", "pgbouncer")
    server = make_url(PG_URL)
    directory = Path(tempfile.mkdtemp(prefix="turnstore-pgbouncer-"))
    port = free_port()
    user = server.username or "postgres"
    password = server.password or ""
    (directory / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (directory / "pgbouncer.ini").write_text(_config(port, directory))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("pgbouncer refuses to run as root, and there is no postgres user")
        for path in (directory, *directory.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    process = subprocess.Popen(
        [program, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **run_as,
    )
    bouncer = Bouncer(port, directory)
    try:
        deadline = time.monotonic() + 15
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pgbouncer did not start:\n{bouncer.log()}", pytrace=False)
            time.sleep(0.05)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


#: The last migration that runs outside a transaction (CREATE INDEX CONCURRENTLY), which
#: PgBouncer's transaction pooling cannot run: a deploy behind PgBouncer runs
#: ``python -m store migrate`` against the server directly (docs/operations.md).
LAST_NO_TRANSACTION = max(m.version for m in sql.migrations("postgres") if not m.transactional)


@pytest.fixture
async def through(pg_target: Target, pgbouncer: Bouncer) -> Target:
    """This test's fresh schema (``pg_target``: dropped afterwards), migrated directly up
    to the last no-transaction migration, reached through PgBouncer (the migrations after
    it run through PgBouncer)."""
    backend = make_backend(pg_target.url, schema=pg_target.schema)
    try:
        await backend.migrate(upto=LAST_NO_TRANSACTION)
    finally:
        await backend.close()
    return Target("postgres", pgbouncer.url, pg_target.schema)


@pytest.fixture
async def stores(through: Target) -> AsyncIterator[list[Store]]:
    """Two stores through PgBouncer, as two application processes would have."""
    opened = [await through.open(config=StoreConfig(busy_timeout=60)) for _ in range(2)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def _plain(bouncer: Bouncer) -> asyncpg.Connection:
    """A plain client through PgBouncer (no turnstore code in the way)."""
    return await asyncpg.connect(bouncer.dsn, statement_cache_size=0)


async def _raw_transaction(bouncer: Bouncer, schema: str | None, *statements: str) -> None:
    """Run SQL in one transaction as a plain client through PgBouncer: its search_path set
    for the transaction only, as transaction pooling requires."""
    conn = await _plain(bouncer)
    try:
        async with conn.transaction():
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


# --- the option -------------------------------------------------------------------------


async def test_pgbouncer_refuses_the_direct_settings_and_the_store_says_what_to_do(
    through: Target, pgbouncer: Bouncer
) -> None:
    with pytest.raises(asyncpg.ProtocolViolationError, match="unsupported startup parameter"):
        await asyncpg.connect(pgbouncer.dsn, server_settings={"enable_seqscan": "off"})
    direct = through.url.split("?", 1)[0]
    with pytest.raises(ValueError, match=r"add \?pgbouncer=transaction to the URL"):
        await Store.open(direct, schema=through.schema)
    with pytest.raises(ValueError, match="statement pooling"):
        await Store.open(f"{direct}?pgbouncer=statement", schema=through.schema)


async def test_migrate_through_pgbouncer_and_no_session_state_left_behind(
    through: Target, pgbouncer: Bouncer
) -> None:
    store = await through.open()  # applies what this code needs, through PgBouncer
    try:
        needed = sql.needed_version("postgres")
        assert await hooks.backend(store).applied_versions() == list(range(1, needed + 1))
        expected = [m.version for m in sql.migrations("postgres")]
        assert await store.migrate() == expected[needed:]  # the contract ones, likewise
        assert await hooks.backend(store).applied_versions() == expected
        assert await store.migrate() == []  # nothing left to apply
        turn = await store.begin_turn("c", "hello")
        await turn.commit_step(*step("a"))
        await turn.finish("done")
        assert [m.role for m in await store.history("c")] == ["user", "assistant", "tool",
                                                               "tool", "assistant"]  # fmt: skip
    finally:
        await store.close()
    again = await through.open(migrate=False)  # the exact schema, checked through PgBouncer
    await again.close()

    # Both server connections (the pool's only two), held at once by two plain clients:
    # the server's own settings, and no prepared statement left on either.
    direct = await asyncpg.connect(asyncpg_dsn(PG_URL))
    try:
        defaults = await direct.fetchrow(_SETTINGS)
    finally:
        await direct.close()
    clients = [await _plain(pgbouncer) for _ in range(2)]
    try:
        seen = []
        for client in clients:
            await client.execute("BEGIN")
            seen.append(await client.fetchrow(f"{_SETTINGS}, pg_backend_pid() AS pid"))
        assert len({row["pid"] for row in seen}) == 2
        for row in seen:
            settings = ("enable_seqscan", "search_path", "idle_timeout")
            assert [row[k] for k in settings] == [defaults[k] for k in settings]
            assert row["prepared"] == 0
        assert defaults["search_path"] != through.schema
    finally:
        for client in clients:
            await client.close()


async def test_concurrent_first_opens_migrate_once_through_pgbouncer(
    through: Target, pgbouncer: Bouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes starting at once on a new schema: one migrates, the others wait for it
    and find everything done. (Behind PgBouncer a migrator that waited used to try to
    create the schema again: its catalog cache did not know the schema yet.) The
    migrations are those before the first no-transaction one, which PgBouncer refuses
    (below)."""
    schemas = [f"{through.schema}_{n}" for n in range(4)]
    every = sql.migrations("postgres")
    with pytest.raises(SchemaError, match="against the PostgreSQL server directly"):
        await Store.open(through.url, schema=schemas[3])
    before = tuple(m for m in every if m.version < min(v.version for v in every
                                                       if not v.transactional))  # fmt: skip
    monkeypatch.setattr(sql, "migrations", lambda dialect: before)

    async def open_at_once(schema: str, processes: int) -> None:
        opened: list[Store] = []

        async def open_one() -> None:
            opened.append(await Store.open(through.url, schema=schema))

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(processes):
                    tg.start_soon(open_one)
            assert len(opened) == processes
        finally:
            for store in opened:
                await store.close()

    try:
        for schema in schemas[:3]:
            await open_at_once(schema, 4)
        check = await Store.open(through.url, schema=schemas[2], migrate=False)
        await check.close()
    finally:
        direct = await asyncpg.connect(asyncpg_dsn(PG_URL))
        try:
            for schema in schemas:
                await direct.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await direct.close()


_SETTINGS = (
    "SELECT current_setting('enable_seqscan') AS enable_seqscan,"
    " current_setting('search_path') AS search_path,"
    " current_setting('idle_in_transaction_session_timeout') AS idle_timeout,"
    " (SELECT count(*) FROM pg_prepared_statements) AS prepared"
)


# --- the guarantees through PgBouncer --------------------------------------------------


async def test_concurrent_double_submits_make_one_turn_per_key(stores: list[Store]) -> None:
    """9 keys on 3 conversations, each submitted 6 times at once from two stores: one
    turn per key, every submit of a key answered with its turn; then replay and the
    checker."""
    handles: dict[str, list[Any]] = {f"key-{k}": [] for k in range(9)}

    async def submit(key: str, n: int) -> None:
        store = stores[n % 2]
        cid = f"c{int(key.split('-')[1]) % 3}"
        turn = await store.begin_turn(cid, f"prompt {key}", idempotency_key=key)
        handles[key].append(turn)
        if not turn.duplicate:
            await turn.commit_step(*step(f"{key}_s"))
            await turn.finish(f"done {key}")

    async with anyio.create_task_group() as tg:
        for n in range(6):
            for key in handles:
                tg.start_soon(submit, key, n)
    for key, of_key in handles.items():
        assert len(of_key) == 6
        assert sum(1 for h in of_key if not h.duplicate) == 1, key
        assert len({h.id for h in of_key}) == 1, key
    store = stores[0]
    for c in range(3):
        history = await store.history(f"c{c}")
        users = [m.text for m in history if m.role == "user"]
        assert sorted(users) == sorted(f"prompt key-{k}" for k in range(c, 9, 3))
        assert [m.position for m in history] == list(range(len(history)))
        assert await count_rows(store, f"c{c}") == (3, 3 * 5)
        for provider in PROVIDERS:
            body, repairs = await store.replay(f"c{c}", provider)
            assert repairs == []
            assert json.dumps(body).count("prompt key-") == 3
    await assert_clean(store)


async def test_steps_and_pairing_are_refused_for_a_raw_orphan_insert(
    through: Target, pgbouncer: Bouncer
) -> None:
    store = await through.open()
    try:
        turn = await store.begin_turn("c", "build")
        await turn.commit_step(*step("a", calls=2))
        await turn.finish()
        before = await count_rows(store, "c")
        orphan = (
            "INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step, "
            "step_position, tool_call_count, content, tool_call_id, tool_name, "
            f"tool_arguments) VALUES ('c', {before[1]}, 'tool', '{turn.id}', 9, "
            f"{before[1]}, 1, '[]', 'orphan', 'insertHtml', '{{}}')"
        )
        unanswered = orphan.replace("'tool'", "'assistant'").replace(
            "'orphan', 'insertHtml', '{}'", "NULL, NULL, NULL"
        )
        for statement in (orphan, unanswered):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await _raw_transaction(pgbouncer, through.schema, statement)
        assert await count_rows(store, "c") == before
        # the store's own step reusing a call id: refused by the database's unique index
        again = await store.begin_turn("c", "again")
        with pytest.raises(InvalidMessage, match="already used"):
            await again.commit_step(*step("a", calls=1))
        await again.finish()
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_stalled_turn_is_taken_over_and_its_late_write_refused(through: Target) -> None:
    store = await through.open(config=SHORT_LEASE)
    try:
        stalled = await store.begin_turn("c", "first")
        await stalled.commit_step(*step("a"))
        with anyio.fail_after(10):  # no heartbeat: it is past its lease at once
            successor = await store.begin_turn("c", "second")
        assert not successor.duplicate
        assert (await store.turn_status(stalled.id)).status == "expired"
        before = await count_rows(store)
        with pytest.raises(LeaseLost):
            await stalled.commit_step(*step("late"))
        assert await count_rows(store) == before
        await successor.commit_step(*step("b"))
        await successor.finish()
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_lost_reply_is_retried_and_acknowledged_once(
    through: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await through.open(config=StoreConfig(retry_seconds=10))
    try:
        turn = await store.begin_turn("c", "build")
        calls = script_writes(monkeypatch, store, "commit_step", ["apply+lose", "lose"])
        assert await turn.commit_step(*step("A")) == 1
        assert calls == ["apply+lose", "lose", "ok"]  # the third attempt found A landed
        assert await turn.commit_step(*step("B")) == 2
        assert await steps_in_history(store, "c") == [(1, "A: working"), (2, "B: working")]
        await turn.finish()
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_server_connection_killed_inside_a_write_is_retried_once(
    through: Target,
) -> None:
    """The write's server backend is terminated while its transaction waits for the
    conversation's lock (held here, directly on the server): PgBouncer closes the
    client's connection, the outcome is unknown to the store, which retries; the step
    is acknowledged once and stored once."""
    store = await through.open(config=StoreConfig(retry_seconds=30))
    holder = await asyncpg.connect(asyncpg_dsn(PG_URL))  # holds the lock
    watcher = await asyncpg.connect(asyncpg_dsn(PG_URL))  # a fresh pg_stat_activity each time
    try:
        turn = await store.begin_turn("c", "build")
        waiting = (
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        name = f"turnstore:{through.schema}"
        killed: list[int] = []

        async def waiting_pids() -> list[int]:
            return [row["pid"] for row in await watcher.fetch(waiting, name)]

        async def waits_again() -> bool:  # a new server connection waits: the retry
            return any(pid not in killed for pid in await waiting_pids())

        acknowledged: list[int] = []

        async def write() -> None:
            acknowledged.append(await turn.commit_step(*step("A")))

        async with anyio.create_task_group() as tg, holder.transaction():
            await holder.execute(
                "SELECT pg_advisory_xact_lock($1)", hooks.backend(store).lock_key("c")
            )
            tg.start_soon(write)
            await wait_until(waits_again)
            (victim,) = await waiting_pids()
            killed.append(victim)
            assert await watcher.fetchval("SELECT pg_terminate_backend($1)", victim)
            await wait_until(waits_again)
            # the lock released: the retry commits
        assert acknowledged == [1]
        assert await steps_in_history(store, "c") == [(1, "A: working")]
        await turn.finish()
        await assert_clean(store)
    finally:
        await holder.close()
        await watcher.close()
        await store.close()


# --- the plan guarantees through PgBouncer ----------------------------------------------

_PROBE = """
CREATE TABLE turnstore_probe (
    at text, enable_seqscan text, search_path text, idle_timeout text
);
CREATE FUNCTION turnstore_probe_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.turnstore_probe VALUES (
        TG_TABLE_NAME || ' ' || TG_OP, current_setting('enable_seqscan'),
        current_setting('search_path'),
        current_setting('idle_in_transaction_session_timeout'));
    RETURN NULL;
END $$;
"""
_PROBED = {"turnstore_turns": "INSERT OR UPDATE", "turnstore_messages": "INSERT",
           "turnstore_usage": "INSERT"}  # fmt: skip


async def test_enable_seqscan_is_off_in_every_transaction_and_at_its_commit(
    through: Target, pgbouncer: Bouncer
) -> None:
    """A deferred trigger, which fires at COMMIT where the foreign-key checks run, records
    the settings it sees, for every write path: the hot path (group commit), the general
    path (a poll that claims a turn in line, a heartbeat, usage), reads."""
    store = await through.open()
    try:
        schema = through.schema
        await _raw_transaction(
            pgbouncer,
            schema,
            _PROBE.format(schema=schema),
            *(
                f"CREATE CONSTRAINT TRIGGER probe AFTER {events} ON {table} DEFERRABLE "
                "INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION turnstore_probe_record()"
                for table, events in _PROBED.items()
            ),
        )
        first = await store.begin_turn("c", "first")
        async with anyio.create_task_group() as tg:

            async def second() -> None:
                turn = await store.begin_turn("c", "second", timeout=30)
                await turn.finish("two")

            tg.start_soon(second)
            await wait_until(lambda: _queued(store))
            await first.heartbeat()
            await first.commit_step(*step("a"))
            await store.record_usage(first.id, prompt_tokens=10, completion_tokens=2)
            await first.finish("one")
        # and in the statements of a read, and of a transaction of the general path
        async with hooks.backend(store).read() as tx:
            assert (await _settings_in(tx))[:3] == ("off", schema, "10s")
        assert (await hooks.backend(store).transaction("c", _settings_in))[:3] == (
            "off",
            schema,
            "10s",
        )
        seen = await _probe_rows(pgbouncer, schema)
        assert {row["at"] for row in seen} >= {
            "turnstore_turns INSERT",
            "turnstore_turns UPDATE",
            "turnstore_messages INSERT",
            "turnstore_usage INSERT",
        }
        assert {(r["enable_seqscan"], r["search_path"], r["idle_timeout"]) for r in seen} == {
            ("off", schema, "10s")
        }
        await assert_clean(store)
    finally:
        await store.close()


async def _settings_in(tx: Tx) -> tuple[Any, ...]:
    assert isinstance(tx, EngineTx)
    return tuple((await tx.conn.execute(text(_SETTINGS))).one())


async def _queued(store: Store) -> bool:
    async with hooks.backend(store).read() as tx:
        turns = await tx.all("check_turns")
    return any(t.status == "queued" for t in turns)


async def _probe_rows(bouncer: Bouncer, schema: str | None) -> list[asyncpg.Record]:
    conn = await _plain(bouncer)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(f'SELECT * FROM "{schema}".turnstore_probe')
        return rows
    finally:
        await conn.close()


async def test_writes_plan_bounded_lookups_through_pgbouncer(
    through: Target, pgbouncer: Bouncer
) -> None:
    """tests/test_plans.py's check, on a schema analyzed while small, through PgBouncer:
    each write in a transaction of its own on a connection as the store makes them, the
    generic plans of the function's statements and of the foreign-key checks at COMMIT
    logged by auto_explain (loaded in each transaction: any server connection may run it)."""
    store = await through.open()
    for n in range(12):  # as autovacuum would analyze them after 50 rows
        turn = await store.begin_turn(f"small{n % 3}", f"prompt {n}")
        await turn.commit_step(*step(f"small{n}"))
        await turn.finish()
    await store.close()
    conn = await asyncpg.connect(pgbouncer.dsn, **pgbouncer_connect_args(through.schema))
    try:
        async with conn.transaction():
            for (table,) in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", through.schema
            ):
                await conn.execute(f'ANALYZE "{through.schema}"."{table}"')
        plans: list[dict[str, Any]] = []
        conn.add_log_listener(
            lambda _c, m: plans.append(json.loads(m.message.split("plan:", 1)[1])["Plan"])
        )

        async def apply(write: Any) -> asyncpg.Record:
            async with conn.transaction():
                await conn.execute(
                    "LOAD 'auto_explain';"
                    " SET LOCAL auto_explain.log_min_duration = 0;"
                    " SET LOCAL auto_explain.log_nested_statements = on;"
                    " SET LOCAL auto_explain.log_format = json;"
                    " SET LOCAL auto_explain.log_level = notice;"
                    " SET LOCAL plan_cache_mode = force_generic_plan;"
                )
                (row,) = await conn.fetch(APPLY, [as_record(write)])
            return row

        a = await apply(_claim("turn_a", "key-a"))
        assert a["outcome"] == "claimed"
        assert (await apply(_claim("turn_a2", "key-a")))["outcome"] == "duplicate"
        assert (await apply(_claim("turn_b", None)))["outcome"] == "queued"
        assert (await apply(_step("turn_a", a["epoch"], a["next_position"])))["outcome"] is None
        assert (await apply(_end("turn_a", a["epoch"], None)))["outcome"] is None
        b = await apply(_claim("turn_b", None, first=False))
        assert b["outcome"] == "claimed"
        last = _end("turn_b", b["epoch"], _step("turn_b", b["epoch"], b["next_position"]))
        assert (await apply(last))["outcome"] is None
        foreign_key_checks = [p for p in plans if "turnstore_messages" in json.dumps(p)]
        assert len(plans) > 20 and foreign_key_checks
        problems = [problem for plan in plans for problem in unbounded(plan)]
        assert problems == []
    finally:
        await conn.close()
