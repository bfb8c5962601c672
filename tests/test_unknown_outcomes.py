"""Exact outcomes after a lost reply (the contract's item 7).

A write whose connection breaks after it was sent may have committed. Inside the call it is
retried with backoff, and a retry recognises an attempt that landed by the write's content,
never by its step number alone. When the retry budget runs out the caller gets
``OutcomeUnknown``; calling the same write again is answered exactly, and a different
write is applied after it (if it landed) or in its place (if it did not), never
acknowledged in another write's place.

The lost reply is made at the backend's write call, deterministically: the write is
applied (or not), then the connection "breaks" (``ConnectionResetError``, which the
PostgreSQL backend reads as a broken connection). A fault soak makes the same with a
PostgreSQL restart (``python -m store soak``; tests/test_faults.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from store import (
    AssistantMessage,
    OutcomeUnknown,
    Store,
    StoreConfig,
    StoreUnavailable,
    ToolCall,
    ToolResult,
    WriteNotApplied,
    hooks,
)
from store.soak.pgserver import free_port

from .conftest import Target
from .helpers import assert_clean

Script = list[str]  # per call: "apply+lose" | "lose" | "ok"


def script_writes(
    monkeypatch: pytest.MonkeyPatch, store: Store, method: str, script: Script
) -> list[str]:
    """Make the backend's ``method`` follow ``script``: ``apply+lose`` applies the write
    and loses the reply, ``lose`` loses it unsent, ``ok`` (and every call after the script)
    goes through. Returns the log of what each call did."""
    real: Callable[..., Awaitable[Any]] = getattr(hooks.backend(store), method)
    done: list[str] = []

    async def scripted(*args: Any, **kwargs: Any) -> Any:
        what = script[len(done)] if len(done) < len(script) else "ok"
        done.append(what)
        if what == "lose":
            raise ConnectionResetError("connection lost before the write went out")
        result = await real(*args, **kwargs)
        if what == "apply+lose":
            raise ConnectionResetError("connection lost before the reply")
        return result

    monkeypatch.setattr(hooks.backend(store), method, scripted)
    return done


def step(name: str) -> tuple[AssistantMessage, list[ToolResult]]:
    call = ToolCall(f"call_{name}", "insertHtml", {"html": f"<p>{name}</p>"})
    return AssistantMessage(f"step {name}", [call]), [ToolResult(call.id, f"{name} ok")]


async def steps_in_history(store: Store, conversation_id: str) -> list[tuple[int, str]]:
    return [(m.step, m.text) for m in await store.history(conversation_id) if m.role == "assistant"]


@pytest.fixture
async def pg(pg_target: Target) -> Any:
    opened: list[Store] = []

    async def open_store(retry_seconds: float) -> Store:
        config = StoreConfig(lease_seconds=30, retry_seconds=retry_seconds)
        store = await pg_target.open(config=config)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


async def test_a_lost_reply_is_retried_and_acknowledged_once(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await pg(retry_seconds=10)
    turn = await store.begin_turn("c", "build")
    calls = script_writes(monkeypatch, store, "commit_step", ["apply+lose", "lose"])
    assert await turn.commit_step(*step("A")) == 1
    assert calls == ["apply+lose", "lose", "ok"]  # the third attempt found A landed
    assert await turn.commit_step(*step("B")) == 2
    assert await steps_in_history(store, "c") == [(1, "step A"), (2, "step B")]
    await turn.finish()
    await assert_clean(store)


async def test_a_different_write_after_an_unknown_outcome_goes_after_it(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak's false acknowledgement: A committed, its reply lost; B must not be
    acknowledged as step 1 (which holds A)."""
    store = await pg(retry_seconds=0)
    turn = await store.begin_turn("c", "build")
    script_writes(monkeypatch, store, "commit_step", ["apply+lose"])
    with pytest.raises(OutcomeUnknown):
        await turn.commit_step(*step("A"))
    assert await turn.commit_step(*step("B")) == 2
    assert await turn.commit_step(*step("C")) == 3
    assert await steps_in_history(store, "c") == [(1, "step A"), (2, "step B"), (3, "step C")]
    await turn.finish()
    await assert_clean(store)


async def test_a_different_write_takes_the_place_of_one_that_did_not_land(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await pg(retry_seconds=0)
    turn = await store.begin_turn("c", "build")
    script_writes(monkeypatch, store, "commit_step", ["lose"])
    with pytest.raises(OutcomeUnknown):
        await turn.commit_step(*step("A"))
    assert await turn.commit_step(*step("B")) == 1
    assert await steps_in_history(store, "c") == [(1, "step B")]
    await turn.finish()
    await assert_clean(store)


@pytest.mark.parametrize("landed", [True, False])
async def test_the_same_write_again_is_answered_exactly(
    pg: Any, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    store = await pg(retry_seconds=0)
    turn = await store.begin_turn("c", "build")
    script_writes(monkeypatch, store, "commit_step", ["apply+lose" if landed else "lose"])
    with pytest.raises(OutcomeUnknown):
        await turn.commit_step(*step("A"))
    assert await turn.commit_step(*step("A")) == 1  # once, whether or not it had landed
    assert await turn.commit_step(*step("A2")) == 2
    assert await steps_in_history(store, "c") == [(1, "step A"), (2, "step A2")]
    await turn.finish()
    await assert_clean(store)


async def test_a_write_while_the_outcome_cannot_be_learnt_is_not_applied(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await pg(retry_seconds=0)
    turn = await store.begin_turn("c", "build")
    script_writes(monkeypatch, store, "commit_step", ["apply+lose"])
    with pytest.raises(OutcomeUnknown):
        await turn.commit_step(*step("A"))
    real_read = hooks.backend(store).read

    @asynccontextmanager
    async def away() -> AsyncIterator[Any]:  # the database is still away
        raise ConnectionResetError("connection refused")
        yield

    monkeypatch.setattr(hooks.backend(store), "read", away)
    with pytest.raises(WriteNotApplied):
        await turn.commit_step(*step("B"))
    monkeypatch.setattr(hooks.backend(store), "read", real_read)
    assert await turn.commit_step(*step("B")) == 2  # back: A landed, B goes after it
    assert await steps_in_history(store, "c") == [(1, "step A"), (2, "step B")]
    await turn.finish()
    await assert_clean(store)


async def test_an_end_with_a_lost_reply_is_answered_exactly(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await pg(retry_seconds=0)
    turn = await store.begin_turn("c", "build")
    script_writes(monkeypatch, store, "end_turn", ["apply+lose"])
    with pytest.raises(OutcomeUnknown):
        await turn.finish("done")
    await turn.finish("done")  # the same end again: it had landed
    assert turn.status == "finished"
    assert await steps_in_history(store, "c") == [(1, "done")]
    assert (await store.turn_status(turn.id)).status == "finished"
    await assert_clean(store)


@pytest.mark.parametrize("landed", [True, False])
async def test_a_submit_with_a_lost_reply_is_answered_exactly(
    pg: Any, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """The same submit again is this submit's own turn, never a duplicate of itself."""
    store = await pg(retry_seconds=0)
    script_writes(monkeypatch, store, "claim_fast", ["apply+lose" if landed else "lose"])
    with pytest.raises(OutcomeUnknown):
        await store.begin_turn("c", "build", idempotency_key="k1")
    turn = await store.begin_turn("c", "build", idempotency_key="k1")
    assert not turn.duplicate and turn.status == "running"
    assert await turn.commit_step(*step("A")) == 1
    await turn.finish()
    history = await store.history("c")
    assert [m.text for m in history if m.role == "user"] == ["build"]
    again = await store.begin_turn("c", "build", idempotency_key="k1")
    assert again.duplicate and again.id == turn.id
    await assert_clean(store)


async def test_an_unreachable_server_is_a_typed_error(pg_target: Target) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    with anyio.fail_after(30), pytest.raises(StoreUnavailable, match="cannot reach"):
        await Store.open(url)


async def test_sqlite_locked_past_the_budget_is_not_applied(tmp_path: Any) -> None:
    """A real fault on SQLite: another connection holds the write lock past the busy
    timeout and the retry budget. The write is refused, known not applied, and goes
    through once the lock is released."""
    path = tmp_path / "locked.db"
    config = StoreConfig(lease_seconds=30, retry_seconds=0.3)
    async with Store.open(
        f"sqlite+aiosqlite:///{path}", config=config, sqlite_busy_timeout=0.1
    ) as store:
        turn = await store.begin_turn("c", "build")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(WriteNotApplied):
                await turn.commit_step(*step("A"))
            assert time.monotonic() - started < 20  # bounded, not the default budget
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert await steps_in_history(store, "c") == []
        assert await turn.commit_step(*step("A")) == 1
        await turn.finish()
        await assert_clean(store)


async def test_a_submit_stays_itself_across_failed_attempts(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not applied, then unknown, then answered: the third call is this submit's own turn
    (before, the remembered turn id was forgotten after a failed resume)."""
    store = await pg(retry_seconds=0)
    script_writes(monkeypatch, store, "claim_fast", ["lose", "lose", "apply+lose"])
    with pytest.raises(StoreUnavailable):
        await store.begin_turn("c", "build", idempotency_key="k1")
    with pytest.raises(StoreUnavailable):
        await store.begin_turn("c", "build", idempotency_key="k1")
    with pytest.raises(OutcomeUnknown):
        await store.begin_turn("c", "build", idempotency_key="k1")
    turn = await store.begin_turn("c", "build", idempotency_key="k1")
    assert not turn.duplicate and turn.status == "running"
    await turn.finish("done")
    assert [m.text for m in await store.history("c") if m.role == "user"] == ["build"]
    await assert_clean(store)


async def test_a_session_idle_inside_a_transaction_is_ended_by_the_server(
    pg_target: Target,
) -> None:
    """A process paused between BEGIN and COMMIT (GC, SIGSTOP) holds the conversation's
    lock: the server ends such a session, so the conversation is not blocked until it
    resumes."""
    async with await pg_target.open() as store, await pg_target.open() as other:
        async with hooks.backend(store).engine.connect() as conn:
            setting = await conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout")
            assert setting.scalar() == "10s"
        paused = hooks.backend(store).engine.connect()
        await paused.start()
        try:
            await paused.begin()
            await paused.exec_driver_sql(  # the conversation's lock, then silence
                f"SELECT pg_advisory_xact_lock({hooks.backend(store).lock_key('c')})"
            )
            with anyio.fail_after(60):
                turn = await other.begin_turn("c", "go", timeout=60)
            await turn.finish()
        finally:
            with contextlib.suppress(Exception):
                await paused.close()


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.CrashShutdownError("terminating connection: crash of another"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionRefusedError("connection refused"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_server_that_is_restarting_is_a_transient_failure(
    pg_target: Target, error: Exception
) -> None:
    """Found by the soak: a store opened while PostgreSQL was starting up got a raw
    DBAPIError. Each of these, bare or wrapped by SQLAlchemy, is retried and typed."""
    async with await pg_target.open() as store:
        wrapped = DBAPIError("SELECT 1", None, error)
        for exc in (error, wrapped):
            assert hooks.backend(store).failure(exc) is not None, exc
