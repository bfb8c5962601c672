"""``agents-sdk``: the OpenAI Agents SDK's ``SQLAlchemySession`` used as its runner uses it:
the turn's input (the user message) in one ``add_items``, then one ``add_items`` per model
step with that step's new items in the Responses-item shape (the assistant ``message``, a
``function_call`` per call, a ``function_call_output`` per result). One session object per
conversation over one shared async engine.

No idempotency key. ``add_items`` serializes writers of one session with ``SELECT ... FOR
UPDATE`` on its session row, but that lock's wait is not observable from outside (shown as
n/a). The SDK writes nothing for a step that was cut before its items were saved, so
``interrupt_turn`` does nothing.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..checker import CheckRow
from ..dbtarget import (
    DbTarget,
    create_pg_schema,
    drop_pg_schema,
    parse_db_url,
    remove_sqlite_files,
)
from ..readback import read_agent_items_pg, read_agent_items_sqlite
from .base import Adapter, AdapterOptions, PartialStep, PreloadTurn, ToolCall, ToolResult

SESSIONS_TABLE = "agent_sessions"
MESSAGES_TABLE = "agent_messages"

_dumps = json.JSONEncoder(separators=(",", ":")).encode  # as the SDK serializes


@dataclass(slots=True)
class AgentsTurn:
    session: SQLAlchemySession


def user_item(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def step_items(
    text: str, calls: Sequence[ToolCall], results: Sequence[ToolResult]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {
            "id": f"msg_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
    ]
    for c in calls:
        items.append(
            {
                "id": f"fc_{c.id.removeprefix('call_')}",
                "type": "function_call",
                "call_id": c.id,
                "name": c.name,
                "arguments": _dumps(c.arguments),
                "status": "completed",
            }
        )
    for r in results:
        items.append({"type": "function_call_output", "call_id": r.call_id, "output": r.output})
    return items


class AgentsSdkAdapter(Adapter[AgentsTurn]):
    name = "agents-sdk"
    stores_positions = False  # ordered by (created_at, id)

    _engine: AsyncEngine | None = None
    _target: DbTarget | None = None
    _schema = ""

    def __init__(self, options: AdapterOptions) -> None:
        super().__init__(options)
        self._sessions: dict[str, SQLAlchemySession] = {}

    async def setup(self, url: str, schema: str) -> None:
        target = self._target = parse_db_url(url)
        self._schema = schema
        kwargs: dict[str, Any] = {}
        if target.backend == "postgres":
            assert target.asyncpg_dsn is not None
            await create_pg_schema(target.asyncpg_dsn, schema)
            kwargs = {
                "pool_size": self.options.pool_size,
                "max_overflow": 0,
                "connect_args": {"server_settings": {"search_path": schema}},
            }
        else:
            remove_sqlite_files(target.sqlite_file(schema))
        self._engine = create_async_engine(target.sqlalchemy_url(schema), **kwargs)
        first = SQLAlchemySession("__setup__", engine=self._engine, create_tables=True)
        await first.get_items()  # creates the tables

    async def teardown(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        t = self._target
        if t is not None and self._schema:
            if t.backend == "postgres":
                assert t.asyncpg_dsn is not None
                await drop_pg_schema(t.asyncpg_dsn, self._schema)
            else:
                remove_sqlite_files(t.sqlite_file(self._schema))

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        """Bulk-load the SDK's two tables directly, in the SDK's own row format, in batches
        (each batch's new session rows first: messages reference them)."""
        t = self._target
        assert t is not None
        if t.backend == "postgres":
            assert t.asyncpg_dsn is not None
            conn = await asyncpg.connect(t.asyncpg_dsn)
            try:
                for sessions, messages in _preload_batches(turns):
                    for table, cols, records in (
                        (SESSIONS_TABLE, ["session_id"], [(s,) for s in sessions]),
                        (MESSAGES_TABLE, ["session_id", "message_data"], messages),
                    ):
                        await conn.copy_records_to_table(
                            table, records=records, columns=cols, schema_name=self._schema
                        )
                await conn.execute(f"ANALYZE {self._schema}.{MESSAGES_TABLE}")
            finally:
                await conn.close()
        else:
            path = t.sqlite_file(self._schema)
            await anyio.to_thread.run_sync(_sqlite_preload, path, _preload_batches(turns))

    def _session(self, conversation_id: str) -> SQLAlchemySession:
        s = self._sessions.get(conversation_id)
        if s is None:
            assert self._engine is not None
            s = self._sessions[conversation_id] = SQLAlchemySession(
                conversation_id, engine=self._engine
            )
        return s

    async def begin_turn(
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> AgentsTurn:
        session = self._session(conversation_id)
        await session.add_items([user_item(user_text)])  # type: ignore[list-item]
        return AgentsTurn(session)

    async def commit_step(
        self,
        turn: AgentsTurn,
        assistant_text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
    ) -> None:
        await turn.session.add_items(step_items(assistant_text, calls, results))  # type: ignore[arg-type]

    async def finish_turn(self, turn: AgentsTurn) -> None:
        return None

    async def interrupt_turn(self, turn: AgentsTurn, partial: PartialStep | None) -> None:
        return None

    async def read_back(self) -> list[CheckRow]:
        t = self._target
        assert t is not None
        if t.backend == "postgres":
            assert t.asyncpg_dsn is not None
            return await read_agent_items_pg(t.asyncpg_dsn, self._schema, MESSAGES_TABLE)
        return await read_agent_items_sqlite(t.sqlite_file(self._schema), MESSAGES_TABLE)


Batch = tuple[list[str], list[tuple[str, str]]]


def _preload_batches(turns: Iterable[PreloadTurn], size: int = 20_000) -> Iterator[Batch]:
    """(session ids not seen before, message rows), about ``size`` messages at a time."""
    seen: set[str] = set()
    sessions: list[str] = []
    messages: list[tuple[str, str]] = []
    for turn in turns:
        if turn.conversation_id not in seen:
            seen.add(turn.conversation_id)
            sessions.append(turn.conversation_id)
        items = [user_item(turn.user_text)]
        for text, calls, results in turn.steps:
            items.extend(step_items(text, calls, results))
        messages.extend((turn.conversation_id, _dumps(i)) for i in items)
        if len(messages) >= size:
            yield sessions, messages
            sessions, messages = [], []
    if messages or sessions:
        yield sessions, messages


def _sqlite_preload(path: Path, batches: Iterable[Batch]) -> None:
    with closing(sqlite3.connect(path)) as conn:
        for sessions, messages in batches:
            conn.executemany(
                f"INSERT INTO {SESSIONS_TABLE} (session_id) VALUES (?)", [(s,) for s in sessions]
            )
            conn.executemany(
                f"INSERT INTO {MESSAGES_TABLE} (session_id, message_data) VALUES (?, ?)", messages
            )
        conn.commit()
