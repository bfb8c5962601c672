"""turnstore itself, every guarantee on: atomic steps, one turn at a time per conversation
(the driver's double submits carry an idempotency key), fencing, database-enforced pairing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from typing import Any, ClassVar

import anyio
import asyncpg

from store import AssistantMessage, Store, StoreConfig, hooks
from store import ToolCall as StoreCall
from store import ToolResult as StoreResult
from store.turn import Turn

from ..checker import CheckRow
from ..dbtarget import DbTarget, check_schema_name, parse_db_url
from .base import Adapter, Duplicate, PartialStep, PreloadTurn, ToolCall, ToolResult

_READ_BACK = (
    "SELECT conversation_id, position, role, tool_call_id, content{cast}, step_position"
    " FROM turnstore_messages ORDER BY conversation_id, position"
)


def _check_rows(rows: Iterable[Sequence[Any]]) -> list[CheckRow]:
    """Rows in (conversation, position) order. An assistant row's calls are the ids of the
    tool rows of its step: collected in one pass, keyed by (conversation, step_position)."""
    rows = list(rows)
    calls: dict[tuple[str, int], list[str]] = {}
    for conv, _pos, role, call_id, _content, step_position in rows:
        if role == "tool":
            calls.setdefault((conv, step_position), []).append(call_id)
    out = []
    for conv, pos, role, call_id, content, _ in rows:
        if role == "tool":
            out.append(CheckRow(conv, pos, "tool", result_for=call_id))
        elif role == "assistant":
            ids = tuple(sorted(calls.get((conv, pos), ())))
            out.append(CheckRow(conv, pos, "assistant", _text(content), ids))
        else:
            out.append(CheckRow(conv, pos, "user", _text(content)))
    return out


_MESSAGE_COLUMNS = [
    "conversation_id", "position", "role", "turn_id", "step", "step_position",
    "tool_call_count", "content", "tool_call_id", "tool_name", "tool_arguments",
    "tool_call_data", "is_error",
]  # fmt: skip


class _Duplicate(Duplicate):
    def __init__(self, turn: Turn) -> None:
        self._turn = turn

    async def wait(self) -> None:
        await self._turn.wait(timeout=300)


def _text(content: Any) -> str:
    parts = json.loads(content) if isinstance(content, str) else content
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


class StoreAdapter(Adapter[Turn]):
    """A turn's last step and its end are one write (``turn.finish(message, results)``)."""

    name: ClassVar[str] = "store"
    supports_idempotency: ClassVar[bool] = True
    reports_lock_wait: ClassVar[bool] = False  # the advisory lock is taken inside the server
    ends_turn_with_last_step: ClassVar[bool] = True

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._store: Store | None = None
        self._target: DbTarget | None = None
        self._schema = ""

    async def setup(self, url: str, schema: str) -> None:
        self._target = parse_db_url(url)
        self._schema = check_schema_name(schema)
        config = StoreConfig(busy_timeout=300, lease_seconds=60)
        if self._target.backend == "postgres":
            self._store = await Store.open(
                self._target.sqlalchemy_url(schema),
                schema=schema,
                pool_size=self.options.pool_size,
                config=config,
            )
            # A scratch schema serves no older code: every migration, the contract ones
            # too, so that on a Citus coordinator its tables are distributed
            # (Store.open applies only what the code needs: docs/operations.md).
            await self._store.migrate()
        else:
            self._store = await Store.open(
                self._target.sqlalchemy_url(schema),
                pool_size=self.options.pool_size,
                config=config,
                sqlite_synchronous="NORMAL",
            )

    async def teardown(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None
        target = self._target
        if target is None:
            return
        if target.backend == "postgres":
            assert target.asyncpg_dsn is not None
            conn = await asyncpg.connect(target.asyncpg_dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self._schema}" CASCADE')
            finally:
                await conn.close()
        else:
            path = target.sqlite_file(self._schema)
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        """PostgreSQL: COPY finished turns straight into the store's tables (the deferred
        pairing constraints check every row at the end). SQLite: the normal turn path."""
        target = self._target
        assert target is not None and self._store is not None
        if target.backend != "postgres":
            await super().preload(turns)
            return
        assert target.asyncpg_dsn is not None
        conversations: dict[str, int] = {}  # next position
        turn_rows: list[tuple[Any, ...]] = []

        def messages() -> Iterator[tuple[Any, ...]]:
            for n, t in enumerate(turns):
                turn_id = f"turn_preload_{n}"
                pos = conversations.get(t.conversation_id, 0)
                turn_rows.append(
                    (turn_id, t.conversation_id, "h", "finished", "preload", len(t.steps))
                )
                yield (t.conversation_id, pos, "user", turn_id, 0, pos, 0,
                       json.dumps([{"type": "text", "text": t.user_text}]),
                       None, None, None, None, False)  # fmt: skip
                pos += 1
                for step, (text, calls, results) in enumerate(t.steps, start=1):
                    start = pos
                    yield (t.conversation_id, pos, "assistant", turn_id, step, start,
                           len(calls), json.dumps([{"type": "text", "text": text}]),
                           None, None, None, None, False)  # fmt: skip
                    by_id = {r.call_id: r for r in results}
                    for call in calls:
                        pos += 1
                        r = by_id[call.id]
                        yield (t.conversation_id, pos, "tool", turn_id, step, start,
                               len(calls), json.dumps([{"type": "text", "text": r.output}]),
                               call.id, call.name, json.dumps(dict(call.arguments)), None,
                               r.is_error)  # fmt: skip
                    pos += 1
                conversations[t.conversation_id] = pos

        rows = list(messages())
        conn = await asyncpg.connect(
            target.asyncpg_dsn, server_settings={"search_path": self._schema}
        )
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "turnstore_conversations", records=[(c,) for c in conversations],
                    columns=["id"],
                )  # fmt: skip
                await conn.execute(
                    "CREATE TEMP TABLE preload_turns (id text, conversation_id text,"
                    " content_hash text, status text, lease_owner text, steps int)"
                    " ON COMMIT DROP"
                )
                await conn.copy_records_to_table("preload_turns", records=turn_rows)
                await conn.execute(
                    "INSERT INTO turnstore_turns (id, conversation_id, content_hash, status,"
                    " lease_owner, lease_expires_at, steps, ended_at)"
                    " SELECT id, conversation_id, content_hash, status, lease_owner, now(),"
                    " steps, now() FROM preload_turns"
                )
                await conn.copy_records_to_table(
                    "turnstore_messages", records=rows, columns=_MESSAGE_COLUMNS
                )
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    async def begin_turn(
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> Turn | Duplicate:
        assert self._store is not None
        turn = await self._store.begin_turn(
            conversation_id, user_text, idempotency_key=idempotency_key
        )
        return _Duplicate(turn) if turn.duplicate else turn

    async def commit_step(
        self,
        turn: Turn,
        assistant_text: str,
        calls: Any,
        results: Any,
    ) -> None:
        await turn.commit_step(_message(assistant_text, calls), _results(results))

    async def finish_turn(self, turn: Turn) -> None:
        await turn.finish()

    async def finish_with_step(
        self, turn: Turn, assistant_text: str, calls: Any, results: Any
    ) -> None:
        await turn.finish(_message(assistant_text, calls), _results(results))

    async def interrupt_turn(self, turn: Turn, partial: PartialStep | None) -> None:
        if turn.status != "running":
            return
        if partial is not None:
            await turn.commit_step(
                _message(partial.assistant_text, partial.calls), _results(partial.completed())
            )
        await turn.interrupt("interrupted by the benchmark")

    async def read_back(self) -> list[CheckRow]:
        target = self._target
        assert target is not None and self._store is not None
        batches, writes = hooks.backend(self._store).write_batches()
        self.counters.update({"write batches": batches, "writes batched": writes})
        if target.backend == "postgres":
            assert target.asyncpg_dsn is not None
            conn = await asyncpg.connect(
                target.asyncpg_dsn, server_settings={"search_path": self._schema}
            )
            try:
                rows = await conn.fetch(_READ_BACK.format(cast="::text"))
            finally:
                await conn.close()
            return _check_rows(rows)
        path = target.sqlite_file(self._schema)

        def read() -> list[CheckRow]:
            with closing(sqlite3.connect(path)) as conn:
                return _check_rows(conn.execute(_READ_BACK.format(cast="")))

        return await anyio.to_thread.run_sync(read)


class StoreEndApartAdapter(StoreAdapter):
    """The store with a turn's end in a write of its own, after its last step's (a runtime
    that calls ``turn.finish()`` after the step): one more round trip per turn."""

    name: ClassVar[str] = "store-end-apart"
    ends_turn_with_last_step: ClassVar[bool] = False


def _message(text: str, calls: tuple[ToolCall, ...] | list[ToolCall]) -> AssistantMessage:
    return AssistantMessage(text, [StoreCall(c.id, c.name, dict(c.arguments)) for c in calls])


def _results(results: Any) -> list[StoreResult]:
    return [StoreResult(r.call_id, r.output, r.is_error) for r in results]


__all__ = ["StoreAdapter", "StoreEndApartAdapter", "ToolResult"]
