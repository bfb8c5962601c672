"""A Citus worker restarted under load loses nothing acknowledged (issue 17).

The suite's shared cluster (STORE_CITUS_URL) is never restarted: it may be a user's own.
This test builds a throwaway 3-node cluster of its own (store/soak/pgserver.py: a
coordinator and two workers, each initdb'd into a temporary directory on a free port),
migrates a store on its coordinator (distributing the tables), and runs the storm of
tests/test_faults.py (tasks doing begin_turn / commit_step / finish on several
conversations, every call recorded) while the worker that holds the first conversation
is restarted, ``fast`` and then ``immediate`` with a short outage. Afterwards it must hold
what test_faults.check_after asserts: every step whose call returned is in history exactly
once (its text and tool call ids), no call raised anything but turnstore's typed errors,
the checker finds nothing, and each conversation accepts a new turn.

The restart is shown to have happened under the writes: the worker's postmaster pid
changes, and after each restart more steps on that worker's conversations are
acknowledged. Waits wait for states; their timeouts only guard against a hang.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
import asyncpg
import pytest

from store import StoreConfig, errors
from store.soak.pgserver import ServerUnavailable, StopMode, ThrowawayPostgres, find_bin

from .conftest import Target, on_postgres
from .helpers import wait_until
from .test_faults import Storm, check_after

pytestmark = pytest.mark.citus_only

#: postgresql.conf lines of a Citus node (as .ci/citus/cluster-up.sh writes them)
CITUS_SETTINGS = {
    "shared_preload_libraries": "'citus'",
    "max_prepared_transactions": "200",
    "wal_level": "logical",
    "citus.node_conninfo": "'sslmode=disable'",
}
CONVERSATIONS = [f"c{i}" for i in range(8)]
#: the worker's restarts: how it stops, and how long it stays down
RESTARTS: list[tuple[StopMode, float]] = [("fast", 0.0), ("immediate", 1.5)]


async def _sql(node: ThrowawayPostgres, *statements: str) -> None:
    conn = await asyncpg.connect(node.dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def throwaway_cluster() -> AsyncIterator[tuple[ThrowawayPostgres, list[ThrowawayPostgres]]]:
    """A coordinator and two workers of this test's own, removed at the end."""
    try:
        find_bin("initdb"), find_bin("pg_ctl")
    except ServerUnavailable as exc:
        pytest.skip(f"a throwaway Citus cluster needs PostgreSQL's server programs: {exc}")
    nodes = [ThrowawayPostgres(settings=CITUS_SETTINGS) for _ in range(3)]
    try:
        for node in nodes:
            await anyio.to_thread.run_sync(node.create)
            await _sql(node, "CREATE EXTENSION citus")
        coordinator, *workers = nodes
        await _sql(
            coordinator,
            f"SELECT citus_set_coordinator_host('127.0.0.1', {coordinator.port})",
            *(f"SELECT citus_add_node('127.0.0.1', {w.port})" for w in workers),
        )
        yield coordinator, workers
    finally:
        with anyio.CancelScope(shield=True):
            for node in nodes:
                await anyio.to_thread.run_sync(node.remove)


async def _placements(coordinator: ThrowawayPostgres, schema: str) -> dict[str, int]:
    """The port of the worker that holds each conversation's shard group."""
    conn = await asyncpg.connect(coordinator.dsn)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_dist_partition "
            "WHERE logicalrelid = 'turnstore_conversations'::regclass"
        ), "migrate did not distribute the tables"
        return {
            cid: int(
                await conn.fetchval(
                    "SELECT nodeport FROM citus_shards "
                    "WHERE table_name = 'turnstore_conversations'::regclass AND shardid = "
                    "get_shard_id_for_distribution_column('turnstore_conversations', $1::text)",
                    cid,
                )
            )
            for cid in CONVERSATIONS
        }
    finally:
        await conn.close()


def _typed(kind: str) -> bool:
    """Whether a Storm violation is a call that raised one of turnstore's typed errors."""
    _, raised, name = kind.rpartition(" raised ")
    return bool(raised) and isinstance(getattr(errors, name, None), type)


async def test_a_worker_restarted_under_load_loses_nothing_acknowledged(
    request: pytest.FixtureRequest,
) -> None:
    on_postgres(request, "citus")
    async with throwaway_cluster() as (coordinator, workers):
        target = Target("citus", coordinator.url, "restart")
        # two stores: one whose retries inside a call (1 s) ride out a quick restart but
        # not the outage, one whose retries (0.1 s) ride out nothing
        configs = [
            StoreConfig(lease_seconds=8, busy_timeout=60, poll_max_seconds=0.05, retry_seconds=s)
            for s in (1.0, 0.1)
        ]
        stores = [await target.open(config=c) for c in configs]  # migrates: distributes
        try:
            placements = await _placements(coordinator, "restart")
            worker = next(w for w in workers if w.port == placements["c0"])
            assert set(placements.values()) == {w.port for w in workers}, placements
            on_worker = {cid for cid, port in placements.items() if port == worker.port}
            storm = Storm(stores, CONVERSATIONS, tasks=2, seed=17)

            def acknowledged() -> int:  # steps returned on the restarted worker's shards
                return sum(
                    1
                    for t in storm.ledger.turns
                    if t.conversation_id in on_worker
                    for s in t.steps
                    if s.returned is not None
                )

            pids = [worker.postmaster_pid()]
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(storm.run)
                    for restart in [*RESTARTS, None]:
                        # the load runs on the worker (and, after a restart, runs there
                        # again: the same Stores, never reopened)
                        done = acknowledged()
                        await wait_until(lambda d=done: acknowledged() >= d + 3)
                        if restart is not None:
                            mode, outage = restart
                            await anyio.to_thread.run_sync(
                                partial(worker.restart, mode, outage=outage)
                            )
                            pids.append(worker.postmaster_pid())
                    storm.stop.set()
            assert len(set(pids)) == len(pids), f"the worker was not restarted: pids {pids}"
            # the worker's outage can hold a conversation past a turn's lease (LeaseLost,
            # nothing written) or past a waiting begin_turn (ConversationBusy): typed
            # answers, so not acknowledgements; what was acknowledged check_after checks.
            # A raw driver error, a duplicate, a gap stay violations.
            for kind in [k for k in storm.ledger.violations if _typed(k)]:
                storm.ledger.errors[kind] += storm.ledger.violations.pop(kind)[0]
            await check_after(storm)
        finally:
            for s in stores:
                await s.close()
