"""A store on Citus: PostgreSQL sharded by conversation (docs/scaling.md).

``python -m store migrate`` on a Citus coordinator (the ``citus`` extension installed in
the database) applies the migrations as on one server, then (once the schema is at
``SHARDABLE_FROM``) distributes every table by its conversation, all in one shard group (a
conversation's turns, history, staged steps, session marks and usage live on the node
that holds the conversation), and registers the
functions that name their conversation first with ``create_distributed_function`` on it,
so that a call runs on that node. The migrations table stays a plain table on the
coordinator. On plain PostgreSQL none of this runs.

A conversation's lock is a transaction-level advisory lock, and an advisory lock only
excludes callers on the node where it is taken. Every write path takes it on the node
that holds the conversation:

* the hot writes (claim, step, end and the hand-over inside it, a takeover inside a claim)
  are one call of ``turnstore_apply_conversation(conversation, writes)``, which Citus
  runs on that node;
* the general write transaction (polls, checkpoints, recovery, erasure, usage, sessions)
  begins with ``turnstore_lock(conversation, key)``. Both functions are distributed with
  ``force_delegation``: inside a transaction block (the general path, or any call behind
  PgBouncer) the call still runs on the node that holds the conversation, in the
  transaction the coordinator keeps open there until COMMIT, so the lock is held on that
  node until the whole transaction commits. Without ``force_delegation`` such a call runs
  on the coordinator, and its lock excludes nobody on the worker
  (tests/test_citus.py proves both).

Functions run on the workers with the search path of the connection the coordinator
opened there, not the store's: each turnstore function is given its schema's search path
(``ALTER FUNCTION ... SET search_path``) before it is distributed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.exceptions._base import PostgresMessageMeta

from .backends.retry import causes

#: The schema version from which the tables are distributed: 15 swapped the last keys
#: without conversation_id (Citus refuses a primary or unique key without the
#: distribution column). A schema migrated only to 14 (``migrate --to 14``, while processes
#: of release 11 still run) stays on the coordinator until 15 is applied; a fresh Citus
#: database, which no older code serves, gets every migration and is distributed at once.
SHARDABLE_FROM = 15

#: The tables, in the order they are distributed (a table after those it references),
#: with their distribution column. turnstore_migrations stays on the coordinator.
TABLES: tuple[tuple[str, str], ...] = (
    ("turnstore_conversations", "id"),
    ("turnstore_erasures", "conversation_id"),
    ("turnstore_turns", "conversation_id"),
    ("turnstore_messages", "conversation_id"),
    ("turnstore_staged_steps", "conversation_id"),
    ("turnstore_session_marks", "conversation_id"),
    ("turnstore_session_writes", "conversation_id"),
    ("turnstore_usage", "conversation_id"),
)

#: The functions that name their conversation first, run on the node that holds it.
FUNCTIONS: tuple[str, ...] = (
    "turnstore_lock(text, bigint)",
    "turnstore_apply_conversation(text, turnstore_write[])",
)

_COLOCATE_WITH = TABLES[0][0]


async def has_citus(conn: asyncpg.Connection) -> bool:
    """Whether the database has the citus extension (a Citus coordinator)."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')")
    )


async def is_sharded(conn: asyncpg.Connection) -> bool:
    """Whether this schema's turnstore tables are distributed (Citus)."""
    if not await has_citus(conn):
        return False
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_dist_partition "
            "WHERE logicalrelid = to_regclass('turnstore_conversations'))"
        )
    )


async def distribute(conn: asyncpg.Connection) -> None:
    """Distribute the tables and functions not distributed yet, inside a transaction
    holding the migration lock (after the migrations). Idempotent."""
    # DDL, distribution and data copies in one transaction: one connection per worker
    # (Citus refuses some DDL after a parallel multi-shard command in the same transaction)
    await conn.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
    # history, session marks and usage have append-only triggers: they run on the shards,
    # where they refuse UPDATE and DELETE as on one server (TRUNCATE: on the coordinator)
    await conn.execute("SET LOCAL citus.enable_unsafe_triggers TO on")
    schema = await conn.fetchval("SELECT current_schema()")
    for function in await conn.fetch(
        "SELECT p.oid::regprocedure::text AS signature FROM pg_proc p "
        "WHERE p.pronamespace = $1::regnamespace AND p.proname LIKE 'turnstore\\_%'",
        schema,
    ):
        await conn.execute(
            f"ALTER FUNCTION {function['signature']} SET search_path = {_ident(schema)}"
        )
    distributed = {
        r["name"]
        for r in await conn.fetch(
            "SELECT logicalrelid::regclass::text AS name FROM pg_dist_partition "
            "WHERE logicalrelid::regclass::text = ANY ($1::text[])",
            [_qualified(schema, t) for t, _ in TABLES] + [t for t, _ in TABLES],
        )
    }
    for table, column in TABLES:
        if table in distributed or _qualified(schema, table) in distributed:
            continue
        if table == _COLOCATE_WITH:
            await conn.execute("SELECT create_distributed_table($1, $2)", table, column)
        else:
            await conn.execute(
                "SELECT create_distributed_table($1, $2, colocate_with => $3)",
                table,
                column,
                _COLOCATE_WITH,
            )
    for signature in FUNCTIONS:
        await conn.execute(
            "SELECT create_distributed_function($1, 'p_conversation_id', "
            "colocate_with => $2, force_delegation => true)",
            signature,
            _COLOCATE_WITH,
        )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, table: str) -> str:
    return f"{schema}.{table}"


async def shard_nodes(conn: asyncpg.Connection, conversation_id: str) -> Any:
    """The node (host, port) that holds a conversation's shard group."""
    row = await conn.fetchrow(
        "SELECT nodename, nodeport FROM citus_shards s "
        "WHERE s.table_name = 'turnstore_conversations'::regclass "
        "AND s.shardid = get_shard_id_for_distribution_column('turnstore_conversations', $1)",
        conversation_id,
    )
    return (row["nodename"], row["nodeport"]) if row else None


class CommitRefusals:
    """The refusals a Citus coordinator relays as warnings when a worker refuses COMMIT.

    A deferred foreign key (the pairing and density checks of history) refused at COMMIT
    in a transaction that wrote to one worker comes back from the coordinator as ``XX000
    could not commit transaction for shard ... on at least one active node``; the worker's
    own error (23503, its constraint name carrying the shard's suffix) arrives before it
    only as a WARNING. The same XX000 follows a connection to the worker that broke at
    COMMIT (an unknown outcome, not a refusal). Listening to the connection's warnings
    tells the two apart: ``refusal`` is the worker's error, raised as PostgreSQL raises it
    on one server, when a class 23 warning came before the XX000; else None."""

    def __init__(self) -> None:
        self.warnings: list[Any] = []

    def __call__(self, connection: Any, message: Any) -> None:
        if str(getattr(message, "sqlstate", "") or "").startswith("23"):
            self.warnings.append(message)

    def refusal(self, exc: BaseException) -> BaseException | None:
        if not self.warnings or not _is_commit_failure(exc):
            return None
        warning = self.warnings[-1]
        # asyncpg's own map of SQLSTATE to its exception class (not in its type stubs)
        error_class = PostgresMessageMeta.get_message_class_for_sqlstate(  # type: ignore[attr-defined]
            warning.sqlstate
        )
        refused: BaseException = error_class(f"{warning.message} (refused at COMMIT: {exc})")
        return refused


@asynccontextmanager
async def refusals_raised(conn: Any) -> AsyncIterator[None]:
    """Runs the block with ``conn``'s warnings heard (``CommitRefusals``): a worker's
    refusal at COMMIT leaves it as the worker's own error, raised outside the handler
    (no XX000 in its context); any other error leaves as it came."""
    refusals = CommitRefusals()
    conn.add_log_listener(refusals)
    try:
        yield
    except Exception as exc:
        refused = refusals.refusal(exc)
        if refused is None:
            raise
    else:
        return
    finally:
        conn.remove_log_listener(refusals)
    raise refused from None


def _is_commit_failure(exc: BaseException) -> bool:
    return any(
        getattr(current, "sqlstate", None) == "XX000"
        and "could not commit transaction" in str(current)
        for current in causes(exc)
    )
