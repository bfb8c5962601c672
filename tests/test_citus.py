"""On Citus a conversation's lock must be taken on the node that holds the conversation.

An advisory lock only excludes callers on the node where it is taken. Each write path of a
conversation is probed on its own: the conversation's lock key is held, by plain
connections of this test, both on the worker that holds the conversation's shard group and
on the coordinator; the path is started; the path must be found waiting for the key on
the worker (pg_locks, not granted), never on the coordinator, and must complete once the
worker's lock is released while the coordinator's is still held. A path that took its lock
on the coordinator would be found waiting there (or would not wait at all, the worker's
lock excluding nothing it does), and fail the probe; the last test shows the probe telling
exactly that of the lock a transaction on one server takes (pg_advisory_xact_lock inside
BEGIN on the coordinator).

Only one call is in flight during a probe (a second store's waiting submit is held back
at its backend), so the waiter found is the probed path's. Nothing here waits for a
guessed time: the probe waits for states, its timeouts only guard against a hang.

Runs when STORE_CITUS_URL names a Citus coordinator (tests/conftest.py); CI starts one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from store import Store, StoreConfig, hooks, sql
from store import citus as citus_module
from store.backends.tx import Tx
from store.errors import IntegrityViolation
from store.recovery import recover_expired
from store.store import make_backend

from .conftest import CITUS_URL, Target, _citus_target, asyncpg_dsn, on_postgres
from .helpers import assert_clean, step, wait_queued, wait_until

pytestmark = pytest.mark.citus_only

Where = str  # "worker", "coordinator" or "nowhere" (the call finished without waiting)


class Nodes:
    """The coordinator and the worker that holds one conversation, as plain connections."""

    def __init__(self, target: Target, conversation_id: str, key: int) -> None:
        self.target = target
        self.conversation_id = conversation_id
        self.key = key
        # pg_advisory_xact_lock(bigint) shows in pg_locks as classid (high half), objid
        # (low half), objsubid 1
        self.classid = (key >> 32) & 0xFFFFFFFF
        self.objid = key & 0xFFFFFFFF
        self.coordinator = asyncpg_dsn(target.url)
        self.worker = ""

    async def find_worker(self) -> None:
        conn = await asyncpg.connect(self.coordinator)
        try:
            await conn.execute(f'SET search_path TO "{self.target.schema}"')
            host, port = await conn.fetchrow(
                "SELECT nodename, nodeport FROM citus_shards "
                "WHERE table_name = 'turnstore_conversations'::regclass AND shardid = "
                "get_shard_id_for_distribution_column('turnstore_conversations', $1::text)",
                self.conversation_id,
            )
        finally:
            await conn.close()
        url = make_url(self.target.url).set(host=host, port=port)
        self.worker = asyncpg_dsn(url.render_as_string(hide_password=False))
        assert self.worker != self.coordinator

    @asynccontextmanager
    async def held(self, dsn: str) -> AsyncIterator[asyncpg.Connection]:
        """The conversation's key held on one node, until the block ends."""
        conn = await asyncpg.connect(dsn)
        try:
            tr = conn.transaction()
            await tr.start()
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self.key)
            try:
                yield conn
            finally:
                await tr.rollback()
        finally:
            await conn.close()

    async def waiting(self, dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1",
                    self.classid,
                    self.objid,
                )
            )
        finally:
            await conn.close()

    async def _first_wait(self, result: dict[str, Any]) -> Where:
        while True:
            if await self.waiting(self.worker):
                return "worker"
            if await self.waiting(self.coordinator):
                return "coordinator"
            if "value" in result:
                return "nowhere"
            await anyio.sleep(0.01)

    async def probe(self, call: Callable[[], Awaitable[Any]]) -> tuple[Where, Any]:
        """Where ``call`` waits for the conversation's lock while both nodes hold it; then
        it runs to its end with the worker's lock released, the coordinator's still held.
        Returns the place and the call's result."""
        result: dict[str, Any] = {}
        done = anyio.Event()

        async def run() -> None:
            result["value"] = await call()
            done.set()

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                async with self.held(self.coordinator):
                    async with self.held(self.worker):
                        tg.start_soon(run)
                        where = await self._first_wait(result)
                        if where == "worker":
                            assert "value" not in result  # it waits: nothing of it ran past
                    if where != "coordinator":  # it ends with the coordinator's lock held
                        await done.wait()
                await done.wait()
        return where, result.get("value")


class Pause:
    """Holds back every call a store makes to its database while set (a paused process);
    ``pause`` returns once none of its calls is in flight."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paused = False
        self.in_flight = 0
        self.resumed = anyio.Event()
        backend = hooks.backend(store)
        real_claim_fast, real_transaction = backend.claim_fast, backend.transaction

        async def claim_fast(request: Any, **kw: Any) -> Any:
            await self._gate()
            self.in_flight += 1
            try:
                return await real_claim_fast(request, **kw)
            finally:
                self.in_flight -= 1

        async def transaction(conversation_id: str, work: Any, **kw: Any) -> Any:
            await self._gate()
            self.in_flight += 1
            try:
                return await real_transaction(conversation_id, work, **kw)
            finally:
                self.in_flight -= 1

        monkeypatch.setattr(backend, "claim_fast", claim_fast)
        monkeypatch.setattr(backend, "transaction", transaction)

    async def pause(self) -> None:
        self.paused = True
        await wait_until(lambda: self.in_flight == 0)

    async def _gate(self) -> None:
        if self.paused:
            await self.resumed.wait()


@pytest.fixture
async def citus(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    on_postgres(request, "citus")
    async with _citus_target() as target:
        yield target


async def _open(target: Target, **config: Any) -> Store:
    settings: dict[str, Any] = {"lease_seconds": 30, "poll_max_seconds": 0.05, **config}
    return await target.open(config=StoreConfig(**settings))


async def test_every_write_path_locks_the_conversation_on_its_worker(
    citus: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = "conversation-on-a-worker"
    a = await _open(citus)
    b = await _open(citus)
    try:
        assert hooks.backend(a).sharded and hooks.backend(b).sharded  # type: ignore[attr-defined]
        nodes = Nodes(citus, cid, hooks.backend(a).lock_key(cid))
        # the shard group exists before the conversation's first row: its node is known
        await nodes.find_worker()
        seen: dict[str, Where] = {}

        # claim: a new conversation's first turn
        seen["claim"], first = await nodes.probe(lambda: a.begin_turn(cid, "first"))
        # step
        seen["step"], _ = await nodes.probe(lambda: first.commit_step(*step("s1", 2)))
        # checkpoint: the step in progress staged, in the general write transaction
        open_step = first.step()
        open_step.text("working")
        open_step.tool_call("k", "insertHtml", {"html": "<p>"})
        open_step.tool_result("k", "done")
        seen["checkpoint"], _ = await nodes.probe(open_step.checkpoint)
        # usage, in the general write transaction
        seen["usage"], _ = await nodes.probe(lambda: first.record_usage(prompt_tokens=3))
        # hand-over: b waits in line (then held back, so that only the end is in flight);
        # the end starts b's turn in its transaction
        pause = Pause(b, monkeypatch)
        async with anyio.create_task_group() as tg:
            second: dict[str, Any] = {}

            async def submit_second() -> None:
                second["turn"] = await b.begin_turn(cid, "second", on_busy="wait", timeout=60)

            tg.start_soon(submit_second)
            await wait_queued(a, cid, 1)
            await pause.pause()
            seen["end and hand-over"], _ = await nodes.probe(lambda: first.finish("first done", []))
            pause.resumed.set()
        handed = second["turn"]
        assert (await a.turn_status(handed.id)).status == "running"
        await handed.finish("second done")
        # takeover recovering a checkpoint: a turn whose owner stops (no heartbeat) after
        # staging a step; once its lease ran out, a claim finds the checkpoint and takes
        # the general path (store.claim: 'recover'), which this runs
        stopping = await _open(citus, lease_seconds=0.3)
        try:
            third = await stopping.begin_turn(cid, "third")
            stalled = third.step()
            stalled.text("half way")
            stalled.tool_call("h", "insertHtml", {"html": "<h1>"})
            await stalled.checkpoint()
        finally:
            await stopping.close()
        await wait_expired(a, cid)
        seen["takeover (recovery)"], taken = await nodes.probe(
            lambda: hooks.backend(b).transaction(cid, lambda tx: recover_expired(b.config, tx, cid))
        )
        assert taken == [third.id]
        # takeover inside a claim: a lease that ran out, no checkpoint
        lapsing = await _open(citus, lease_seconds=0.3)
        try:
            lapsed = await lapsing.begin_turn(cid, "lapsing")
        finally:
            await lapsing.close()
        await wait_expired(a, cid)
        seen["claim with takeover"], fourth = await nodes.probe(lambda: a.begin_turn(cid, "fourth"))
        assert (await a.turn_status(lapsed.id)).status == "expired"
        seen["end"], _ = await nodes.probe(lambda: fourth.finish("fourth done"))
        # erasure, in the general write transaction
        seen["erasure"], _ = await nodes.probe(lambda: a.delete_conversation(cid))
        assert seen == dict.fromkeys(seen, "worker"), seen
        await assert_clean(a)
    finally:
        await a.close()
        await b.close()


async def wait_expired(store: Store, conversation_id: str) -> None:
    """Until no live turn of the conversation holds an unexpired lease."""
    with anyio.fail_after(30):
        while True:
            async with hooks.backend(store).read() as tx:
                head = await tx.one("queue_head", conversation_id=conversation_id)
            if head is None or head.stale:
                return
            await anyio.sleep(0.05)


async def test_a_lock_taken_as_on_one_server_is_taken_on_the_coordinator(citus: Target) -> None:
    """The probe tells a lock taken on the wrong node: pg_advisory_xact_lock inside a
    transaction on the coordinator (what the store does on one server) is taken there, and
    excludes nobody on the worker."""
    cid = "conversation-on-a-worker"
    store = await _open(citus)
    try:
        key = hooks.backend(store).lock_key(cid)
        nodes = Nodes(citus, cid, key)
        await nodes.find_worker()
        backend = hooks.backend(store)
        engine = backend.engine

        async def as_on_one_server() -> None:
            async with engine.connect() as conn, conn.begin():
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key})")

        where, _ = await nodes.probe(as_on_one_server)
        assert where == "coordinator"
    finally:
        await store.close()


async def test_a_pairing_refusal_on_a_worker_is_an_integrity_violation(citus: Target) -> None:
    """A deferred pairing check refused at COMMIT on one worker reaches the coordinator as
    XX000 "could not commit transaction" (the 23503 only a warning): the store raises it as
    the foreign key violation it is, and the refused writer stays usable."""
    store = await _open(citus)
    try:
        turn = await store.begin_turn("c", "go")

        async def unanswered_call(tx: Tx) -> None:
            await tx.run(  # an assistant row announcing a call that never gets its row
                "insert_message", conversation_id="c", position=1, role="assistant",
                turn_id=turn.id, step=1, step_position=1, tool_call_count=1, content="[]",
                tool_call_id=None, tool_name=None, tool_arguments=None, tool_call_data=None,
                is_error=False,
            )  # fmt: skip

        with pytest.raises(Exception) as refused:
            await hooks.backend(store).transaction("c", unanswered_call)
        assert isinstance(refused.value, asyncpg.ForeignKeyViolationError), refused.value
        assert "could not commit transaction" in str(refused.value)
        translated = hooks.backend(store).translate(refused.value)
        assert isinstance(translated, IntegrityViolation)
        assert [m.role for m in await store.history("c")] == ["user"]
        await turn.commit_step(*step("a", 1))
        await turn.finish("still fine")
        assert [m.role for m in await store.history("c")] == [
            "user",
            "assistant",
            "tool",
            "assistant",
        ]
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_schema_migrated_partway_stays_on_the_coordinator(citus: Target) -> None:
    """Distributed only with every migration through citus.SHARDABLE_FROM: at 14 (a deploy
    from release 11, whose processes still run) the tables stay plain tables."""
    backend = make_backend(citus.url, schema=citus.schema)
    try:
        await backend.migrate(upto=citus_module.SHARDABLE_FROM - 1)
        conn = await asyncpg.connect(asyncpg_dsn(CITUS_URL))
        try:
            await conn.execute(f'SET search_path TO "{citus.schema}"')
            assert not await citus_module.is_sharded(conn)
            assert await backend.migrate() == list(
                range(citus_module.SHARDABLE_FROM, sql.code_version("postgres") + 1)
            )
            assert await citus_module.is_sharded(conn)
        finally:
            await conn.close()
    finally:
        await backend.close()


async def test_migrate_distributes_every_table_in_one_shard_group(citus: Target) -> None:
    store = await _open(citus)
    await store.close()
    conn = await asyncpg.connect(asyncpg_dsn(CITUS_URL))
    try:
        await conn.execute(f'SET search_path TO "{citus.schema}"')
        rows = await conn.fetch(
            "SELECT logicalrelid::regclass::text AS name, colocationid, "
            "column_to_column_name(logicalrelid, partkey) AS column FROM pg_dist_partition "
            "WHERE logicalrelid::regclass::text LIKE 'turnstore\\_%'"
        )
        tables = {r["name"]: r["column"] for r in rows}
        assert tables == {
            "turnstore_conversations": "id",
            **{
                name: "conversation_id"
                for name in (
                    "turnstore_erasures",
                    "turnstore_turns",
                    "turnstore_messages",
                    "turnstore_staged_steps",
                    "turnstore_session_marks",
                    "turnstore_session_writes",
                    "turnstore_usage",
                )
            },
        }
        assert len({r["colocationid"] for r in rows}) == 1
        functions = await conn.fetch(
            "SELECT p.proname, d.distribution_argument_index, d.force_delegation "
            "FROM pg_dist_object d JOIN pg_proc p ON p.oid = d.objid "
            "WHERE d.classid = 'pg_proc'::regclass AND d.colocationid IS NOT NULL "
            "AND p.pronamespace = current_schema()::regnamespace"
        )
        assert {(f["proname"], f["distribution_argument_index"], f["force_delegation"])
                for f in functions} == {
            ("turnstore_lock", 0, True),
            ("turnstore_apply_conversation", 0, True),
        }  # fmt: skip
    finally:
        await conn.close()
