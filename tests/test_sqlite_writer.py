"""SQLite's writer: transactions run to their end in the writer thread, and a step costs
the same whatever the length of the conversation (the pairing checks' child keys are
indexed: sqlite/0004_child_key_indexes.sql)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import anyio
import pytest

from store import Store, hooks
from store.backends.sqlite import SqliteBackend, _enter_wal
from store.backends.sqlite_checkpoint import BACKSTOP_PAGES, EVERY_COMMITS, Checkpointer
from store.backends.tx import Tx

from .conftest import Target
from .helpers import step


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[Store]:
    target = Target("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'writer.db'}", None)
    store = await target.open()
    try:
        yield store
    finally:
        await store.close()


class _Suspend:
    """An awaitable that suspends, as any real I/O would."""

    def __await__(self) -> Generator[None, None, None]:
        yield


async def test_a_transaction_that_awaits_something_else_is_refused(lite: Store) -> None:
    async def suspends(tx: Tx) -> None:
        await tx.scalar("first_epoch", conversation_id="c")
        await _Suspend()

    with pytest.raises(RuntimeError, match="awaited something other than its Tx"):
        await hooks.backend(lite).transaction("c", suspends)
    turn = await lite.begin_turn("c", "still works")  # rolled back; the writer is usable
    await turn.finish()
    assert [m.text for m in await lite.history("c")] == ["still works"]


async def test_a_step_costs_the_same_at_10_and_at_2000_messages(lite: Store) -> None:
    backend = hooks.backend(lite)
    assert isinstance(backend, SqliteBackend)
    instructions = 0

    def count() -> int:
        nonlocal instructions
        instructions += 1
        return 0

    async def cost_of_a_step(turn_index: int) -> int:
        nonlocal instructions
        turn = await lite.begin_turn("c", f"prompt {turn_index}")
        backend.writer_connection().set_progress_handler(count, 1)  # every VM instruction
        instructions = 0
        await turn.commit_step(*step(f"t{turn_index}", calls=3))
        measured = instructions
        backend.writer_connection().set_progress_handler(None, 1)
        await turn.finish()
        return measured

    early = await cost_of_a_step(0)
    for n in range(1, 400):  # 5 messages a turn: about 2,000 messages
        turn = await lite.begin_turn("c", f"prompt {n}")
        await turn.commit_step(*step(f"t{n}", calls=3))
        await turn.finish()
    late = await cost_of_a_step(400)
    assert late < early * 1.5, (early, late)  # without the indexes: about 100x


async def test_the_wal_is_checkpointed_by_a_thread_of_its_own(lite: Store) -> None:
    """The writer checkpoints only past the backstop; the checkpointer thread, woken every
    EVERY_COMMITS commits, copies the WAL back into the database file meanwhile."""
    backend = hooks.backend(lite)
    assert isinstance(backend, SqliteBackend)
    checkpointer = backend.checkpointer
    assert checkpointer is not None
    for n in range(EVERY_COMMITS // 2 - 1):  # a claim and a step: one commit each
        turn = await lite.begin_turn(f"c{n}", "go")
        await turn.commit_step(*step(f"t{n}"))
    assert checkpointer.checkpoints == 0  # 62 commits: not woken yet
    turn = await lite.begin_turn("last", "go")
    await turn.commit_step(*step("last"))  # the 64th commit wakes it
    with anyio.fail_after(10):
        while checkpointer.checkpoints == 0:  # noqa: ASYNC110 (a thread's counter)
            await anyio.sleep(0.01)
    assert checkpointer.last_error is None
    wal = backend.writer_connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert wal == BACKSTOP_PAGES
    await lite.close()  # stops the thread
    assert checkpointer._thread is None


async def test_a_failing_checkpoint_is_kept_and_the_thread_goes_on(tmp_path: Path) -> None:
    """A checkpoint that fails (here: the file is not a database) does not stop the thread
    or reach the writer: the error is kept, the next wake tries again, and closing stops
    the thread."""
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not an SQLite database " * 200)
    checkpointer = Checkpointer(str(path), busy_timeout=1)
    try:
        for _wake in range(2):
            first_error = checkpointer.last_error
            for _ in range(EVERY_COMMITS):
                checkpointer.committed()
            with anyio.fail_after(10):
                while checkpointer.last_error is first_error:  # noqa: ASYNC110 (a thread)
                    await anyio.sleep(0.01)
            assert isinstance(checkpointer.last_error, sqlite3.DatabaseError)
        assert checkpointer.checkpoints == 0
    finally:
        checkpointer.close()
    assert checkpointer._thread is None


class _LockedFor:
    """An ``execute`` whose WAL switch finds the database locked ``times`` times."""

    def __init__(self, times: int, error: str = "database is locked") -> None:
        self.times = times
        self.error = error
        self.calls = 0

    def __call__(self, statement: str) -> None:
        assert statement == "PRAGMA journal_mode = WAL"
        self.calls += 1
        if self.calls <= self.times:
            raise sqlite3.OperationalError(self.error)


def test_the_switch_to_wal_is_retried_while_another_connection_holds_the_lock() -> None:
    """Connections opening a new database file at once race to switch it to WAL; SQLite
    tells the loser "database is locked" at once, without its busy timeout."""
    execute = _LockedFor(3)
    _enter_wal(execute, busy_timeout=5)
    assert execute.calls == 4


def test_the_switch_to_wal_gives_up_after_the_busy_timeout() -> None:
    execute = _LockedFor(10**6)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _enter_wal(execute, busy_timeout=0.05)
    assert execute.calls > 1


def test_the_switch_to_wal_does_not_retry_other_errors() -> None:
    execute = _LockedFor(1, error="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk"):
        _enter_wal(execute, busy_timeout=5)
    assert execute.calls == 1


async def test_turns_queued_within_one_millisecond_keep_the_order_they_came_in(
    lite: Store,
) -> None:
    """SQLite's clock ('now') counts milliseconds: two submits queued in one transaction
    tie on created_at. The line is then the order of insertion, not of their random ids."""
    running = await lite.begin_turn("c", "first")

    async def queue(tx: Tx) -> None:
        for turn_id in ("turn_z_earlier", "turn_a_later"):
            await tx.run(
                "insert_turn", turn_id=turn_id, conversation_id="c", idempotency_key=None,
                content_hash=turn_id, status="queued", epoch=0, owner="o",
                lease_seconds=60, pending_content='[{"type": "text", "text": "x"}]',
            )  # fmt: skip
        tx.conn.execute(  # type: ignore[attr-defined]  # the writer's sqlite3 connection
            "UPDATE turnstore_turns SET created_at = 1 WHERE status = 'queued'"
        )

    await hooks.backend(lite).transaction("c", queue)
    async with hooks.backend(lite).read() as tx:
        line = await tx.one("next_in_line", conversation_id="c")
    assert line.id == "turn_z_earlier"
    await running.finish()  # hands over to the head of the line
    assert (await lite.turn_status("turn_z_earlier")).status == "running"
    assert (await lite.turn_status("turn_a_later")).status == "queued"
