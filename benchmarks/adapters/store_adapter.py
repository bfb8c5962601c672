"""turnstore itself, every guarantee on: atomic steps, one turn at a time per conversation
(the driver's double submits carry an idempotency key), fencing, database-enforced pairing."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any, ClassVar

import anyio
import asyncpg

from store import AssistantMessage, Store, StoreConfig
from store import ToolCall as StoreCall
from store import ToolResult as StoreResult
from store.turn import Turn

from ..checker import CheckRow
from ..dbtarget import DbTarget, check_schema_name, parse_db_url
from .base import Adapter, Duplicate, PartialStep, ToolCall, ToolResult

_READ_BACK = (
    "SELECT m.conversation_id, m.position, m.role, m.tool_call_id, m.content{cast},"
    " (SELECT {agg} FROM turnstore_messages t"
    "   WHERE t.conversation_id = m.conversation_id AND t.role = 'tool'"
    "     AND t.step_position = m.position)"
    " FROM turnstore_messages m ORDER BY m.conversation_id, m.position"
)


class _Duplicate(Duplicate):
    def __init__(self, turn: Turn) -> None:
        self._turn = turn

    async def wait(self) -> None:
        await self._turn.wait(timeout=300)


def _text(content: Any) -> str:
    import json

    parts = json.loads(content) if isinstance(content, str) else content
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def _row(conv: str, pos: int, role: str, call_id: str | None, content: Any, calls: Any) -> CheckRow:
    if role == "tool":
        return CheckRow(conv, pos, "tool", result_for=call_id)
    if role == "assistant":
        ids = tuple(sorted(calls.split(","))) if calls else ()
        return CheckRow(conv, pos, "assistant", _text(content), ids)
    return CheckRow(conv, pos, "user", _text(content))


class StoreAdapter(Adapter[Turn]):
    name: ClassVar[str] = "store"
    supports_idempotency: ClassVar[bool] = True
    reports_lock_wait: ClassVar[bool] = False  # the advisory lock is taken inside the server

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
        assert target is not None
        if target.backend == "postgres":
            assert target.asyncpg_dsn is not None
            conn = await asyncpg.connect(
                target.asyncpg_dsn, server_settings={"search_path": self._schema}
            )
            try:
                rows = await conn.fetch(
                    _READ_BACK.format(cast="::text", agg="string_agg(t.tool_call_id, ',')")
                )
            finally:
                await conn.close()
            return [_row(*r) for r in rows]
        path = target.sqlite_file(self._schema)

        def read() -> list[CheckRow]:
            with closing(sqlite3.connect(path)) as conn:
                sql = _READ_BACK.format(cast="", agg="group_concat(t.tool_call_id, ',')")
                return [_row(*r) for r in conn.execute(sql)]

        return await anyio.to_thread.run_sync(read)


def _message(text: str, calls: tuple[ToolCall, ...] | list[ToolCall]) -> AssistantMessage:
    return AssistantMessage(text, [StoreCall(c.id, c.name, dict(c.arguments)) for c in calls])


def _results(results: Any) -> list[StoreResult]:
    return [StoreResult(r.call_id, r.output, r.is_error) for r in results]


__all__ = ["StoreAdapter", "ToolResult"]
