"""Real faults, not mocks: connections terminated by the server during commits, a
PostgreSQL server restarted under load, a process stopped past its lease and resumed, a
process killed inside an SQLite write transaction. (A process killed mid-step:
tests/test_processes.py::test_a_killed_process_loses_no_completed_tool_result.)

Each test asserts what must hold whatever the timing of the fault: every step whose call
returned is in history exactly once, with its content; every call that raised raised a
turnstore error (``StoreError``), never a driver's; a write whose outcome was unknown is in
history at most once, and calling it again answers it exactly; the checker finds nothing;
positions are dense; and each conversation accepts a new turn afterwards. Waits are bounded
by ``anyio.fail_after``, which guards against a hang and measures nothing.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg
import pytest
from anyio.abc import Process

from store import (
    OutcomeUnknown,
    Store,
    StoreConfig,
    StoredMessage,
    StoreError,
    StoreUnavailable,
    Turn,
    hooks,
)
from store.checker import check
from store.messages import INTERRUPTED
from store.soak.pgserver import ServerUnavailable, ThrowawayPostgres, find_bin

from .conftest import PG_URL, Target, asyncpg_dsn, on_postgres
from .helpers import assert_clean, step, wait_until

T = TypeVar("T")
WORKER = str(Path(__file__).with_name("fault_worker.py"))
ROOT = str(Path(__file__).parents[1])


# --- a storm of turns, and what it must leave behind --------------------------------------


@dataclass
class StepCall:
    """One step a task tried to commit, and what its calls answered."""

    prefix: str  # its content identity: text "<prefix>: working", calls <prefix>_0, _1
    returned: int | None = None  # the step number commit_step returned
    raised: list[str] = field(default_factory=list)  # the errors its calls raised, in order
    abandoned: bool = False  # OutcomeUnknown, then the task went on with another write


@dataclass
class TurnRecord:
    conversation_id: str
    key: str
    turn_id: str | None = None
    finished: bool = False
    begin_errors: list[str] = field(default_factory=list)  # what begin_turn raised first
    duplicate_of: str | None = None  # begin_turn called again answered a duplicate of this
    steps: list[StepCall] = field(default_factory=list)


@dataclass
class Ledger:
    turns: list[TurnRecord] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # typed errors, as expected
    #: what breaks the contract: a raw driver error, an unexpected typed error, a duplicate
    #: of one's own submit, a read with a gap (count, and the first message of each kind)
    violations: dict[str, list[Any]] = field(default_factory=dict)
    reads: int = 0

    def violation(self, kind: str, detail: str) -> None:
        entry = self.violations.setdefault(kind, [0, detail])
        entry[0] += 1

    def returned(self) -> int:
        return sum(1 for t in self.turns for s in t.steps if s.returned is not None)

    def unknown(self) -> int:
        return sum(1 for t in self.turns for s in t.steps if "OutcomeUnknown" in s.raised)


class _TurnLost(Exception):
    """The task's turn ended with an error outside the contract (recorded): move on."""


def _name(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__name__}"


class Storm:
    """Tasks that run turns of 1-3 steps on a few conversations, several tasks per
    conversation (so turns queue and hand over), and readers, until ``stop`` is set: then
    each task ends the turn it is in and returns. Every call is recorded in ``ledger``.

    A call that raises ``WriteNotApplied`` is made again; after ``OutcomeUnknown`` the task
    makes the same write again, or (half of the time) goes on with a different one, which
    the contract says first settles the unknown one. A raw (non-turnstore) error is a
    violation; the task then makes the same call again, as it would after OutcomeUnknown.
    """

    def __init__(
        self, stores: list[Store], conversations: list[str], tasks: int, seed: int
    ) -> None:
        self.stores = stores  # task t of a conversation, and its reader, use one in turn
        self.store = stores[0]
        self.conversations = conversations
        self.tasks = tasks
        self.seed = seed
        self.stop = anyio.Event()
        self.ledger = Ledger()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for c, cid in enumerate(self.conversations):
                tg.start_soon(self._reader, self.stores[c % len(self.stores)], cid)
                for t in range(self.tasks):
                    tg.start_soon(self._task, self.stores[t % len(self.stores)], cid, t)

    async def _task(self, store: Store, cid: str, t: int) -> None:
        name = f"{cid}-w{t}"
        rng = random.Random(f"{self.seed}:{name}")
        n = 0
        while True:  # at least one turn, whenever the storm stops
            await self._turn(store, cid, f"{name}-t{n}", rng)
            n += 1
            if self.stop.is_set():
                return

    async def _call(
        self, where: str, call: Callable[[], Awaitable[T]], raised: list[str] | None = None
    ) -> T:
        """Make ``call`` until it returns (see the class's docstring); the errors it raised
        on the way are appended to ``raised``."""
        raised = [] if raised is None else raised
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                self.ledger.errors[type(exc).__name__] += 1
                raised.append(type(exc).__name__)
            except StoreError as exc:
                self.ledger.violation(f"{where} raised {type(exc).__name__}", str(exc))
                raise _TurnLost from exc
            except Exception as exc:
                self.ledger.violation(f"{where} raised a raw {_name(exc)}", repr(exc))
                raised.append(_name(exc))
            await anyio.sleep(0.01)

    async def _turn(self, store: Store, cid: str, key: str, rng: random.Random) -> None:
        record = TurnRecord(cid, key)
        self.ledger.turns.append(record)
        try:
            turn: Turn = await self._call(
                "begin_turn",
                lambda: store.begin_turn(cid, f"prompt {key}", idempotency_key=key),
                record.begin_errors,
            )
            if turn.duplicate:  # of this very submit, the only one of its key
                record.duplicate_of = turn.id
                self.ledger.violation(
                    "begin_turn called again after an error answered a duplicate of itself",
                    f"{key}: after {record.begin_errors}, a duplicate of turn {turn.id} "
                    f"({turn.status})",
                )
                return
            record.turn_id = turn.id
            for s in range(rng.randint(1, 3)):
                call = StepCall(f"{key}-s{s}")
                record.steps.append(call)
                await self._commit(turn, call, rng)
            await self._call("finish", lambda: turn.finish())
            record.finished = True
        except _TurnLost:
            return

    async def _commit(self, turn: Turn, call: StepCall, rng: random.Random) -> None:
        message, results = step(call.prefix)
        while True:
            try:
                call.returned = await turn.commit_step(message, results)
                return
            except OutcomeUnknown:
                self.ledger.errors["OutcomeUnknown"] += 1
                call.raised.append("OutcomeUnknown")
                if rng.random() < 0.5:
                    call.abandoned = True
                    return
            except StoreUnavailable as exc:
                self.ledger.errors[type(exc).__name__] += 1
                call.raised.append(type(exc).__name__)
            except StoreError as exc:
                self.ledger.violation(f"commit_step raised {type(exc).__name__}", str(exc))
                call.raised.append(type(exc).__name__)
                raise _TurnLost from exc
            except Exception as exc:
                self.ledger.violation(f"commit_step raised a raw {_name(exc)}", repr(exc))
                call.raised.append(_name(exc))
            await anyio.sleep(0.01)

    async def _reader(self, store: Store, cid: str) -> None:
        while not self.stop.is_set():
            try:
                history = await store.history(cid)
                if [m.position for m in history] != list(range(len(history))):
                    self.ledger.violation("a history read has a gap", cid)
                await store.replay(cid, "anthropic")
                self.ledger.reads += 1
            except StoreUnavailable as exc:
                self.ledger.errors[f"read: {type(exc).__name__}"] += 1
            except Exception as exc:
                self.ledger.violation(f"a read raised {_name(exc)}", repr(exc))
            await anyio.sleep(0.02)


def _step_problems(record: TurnRecord, history: list[StoredMessage]) -> list[str]:
    """What is wrong with ``record``'s steps in its conversation's ``history``."""
    problems: list[str] = []
    heads = {m.text: i for i, m in enumerate(history) if m.role == "assistant"}
    counts = Counter(m.text for m in history if m.role == "assistant")
    present: list[str] = []
    for call in record.steps:
        text = f"{call.prefix}: working"
        n = counts[text]
        if call.returned is not None:
            if n != 1:
                problems.append(f"{call.prefix}: returned {call.returned}, in history {n}×")
                continue
            i = heads[text]
            head, tools = history[i], history[i + 1 : i + 3]
            want = [(f"{call.prefix}_{k}", f"<p>{call.prefix}_{k}</p>", False) for k in range(2)]
            got = [(m.tool_call_id, m.text, m.is_error) for m in tools]
            if (head.turn_id, head.step) != (record.turn_id, call.returned) or got != want:
                problems.append(
                    f"{call.prefix}: returned step {call.returned} of {record.turn_id}, stored "
                    f"as step {head.step} of {head.turn_id} with results {got}"
                )
        elif n > 1:
            problems.append(f"{call.prefix}: raised {call.raised}, in history {n}×")
        elif n == 1 and not call.abandoned:
            problems.append(f"{call.prefix}: raised {call.raised} and was not called again")
        if n:
            present.append(call.prefix)
    stored = [
        (m.step, m.text.removesuffix(": working"))
        for m in history
        if m.role == "assistant" and m.turn_id == record.turn_id
    ]
    if stored != [(k + 1, prefix) for k, prefix in enumerate(present)]:
        problems.append(f"turn {record.key}: steps stored {stored}, expected in order {present}")
    return problems


async def check_after(storm: Storm) -> None:
    """Everything the storm must leave behind (see the module's docstring), reported at once
    so that a failure shows every kind of violation."""
    store, ledger = storm.store, storm.ledger
    print(  # shown with pytest -s, or under a failure
        f"storm: {len(ledger.turns)} turns, {ledger.returned()} steps returned, "
        f"{ledger.unknown()} with an unknown outcome, {ledger.reads} reads; "
        f"typed errors {dict(ledger.errors)}"
    )
    failures = [
        f"{kind}: {n}× (first: {detail})" for kind, (n, detail) in ledger.violations.items()
    ]
    for cid in storm.conversations:
        history = await store.history(cid)
        if [m.position for m in history] != list(range(len(history))):
            failures.append(f"{cid}: positions are not dense")
        users = Counter(m.text for m in history if m.role == "user")
        for record in (t for t in ledger.turns if t.conversation_id == cid):
            if record.duplicate_of is not None:  # what became of the turn nobody ran
                info = await store.turn_status(record.duplicate_of)
                failures.append(
                    f"{record.key}: the turn begin_turn disowned is now {info.status} "
                    f"({info.error}); its user message in history "
                    f"{users[f'prompt {record.key}']}×"
                )
            if record.turn_id is None:
                continue
            if users[f"prompt {record.key}"] != 1:
                failures.append(f"{record.key}: user message {users[f'prompt {record.key}']}×")
            failures += _step_problems(record, history)
            if record.finished:
                status = (await store.turn_status(record.turn_id)).status
                if status != "finished":
                    failures.append(f"{record.key}: finish() returned, the turn is {status}")
    report = await check(hooks.backend(store))
    failures += [f"checker: {v}" for v in report.violations[:10]]
    try:
        with anyio.fail_after(30):
            for cid in storm.conversations:  # the storm left no conversation stuck
                turn = await store.begin_turn(cid, "after the storm")
                assert not turn.duplicate
                await turn.commit_step(*step(f"{cid}-after"))
                await turn.finish()
    except Exception as exc:
        failures.append(f"a new turn after the storm: {_name(exc)}: {exc}")
    assert not failures, "\n".join(failures)
    await assert_clean(store)


# --- 2. connections terminated during commits ---------------------------------------------


async def _terminate(dsn: str, application_name: str, rounds: int, seed: int) -> int:
    """``rounds`` times, terminate every backend of the store (at least one each round: a
    round waits until there is one), at random intervals. Returns how many were
    terminated."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    killed = 0
    try:
        for _ in range(rounds):
            while True:
                n = await conn.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity"
                    " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    application_name,
                )
                if n:
                    killed += n
                    break
                await anyio.sleep(0.005)
            await anyio.sleep(rng.uniform(0.02, 0.12))
    finally:
        await conn.close()
    return killed


async def test_terminated_backends_during_commits_lose_nothing_and_raise_only_typed_errors(
    pg_target: Target,
) -> None:
    # two stores ("processes") on the schema: one retries inside each call, the other not
    # at all, so that every fault reaches its caller as WriteNotApplied or OutcomeUnknown
    configs = [
        StoreConfig(lease_seconds=10, busy_timeout=60, poll_max_seconds=0.05, retry_seconds=s)
        for s in (0.5, 0.0)
    ]
    stores = [await pg_target.open(config=c) for c in configs]
    try:
        storm = Storm(stores, ["c0", "c1", "c2"], tasks=4, seed=2)
        with anyio.fail_after(50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(storm.run)
                killed = await _terminate(
                    asyncpg_dsn(pg_target.url), f"turnstore:{pg_target.schema}", 40, seed=2
                )
                storm.stop.set()
        assert killed >= 40
        assert storm.ledger.returned() > 0
        await check_after(storm)
    finally:
        for s in stores:
            await s.close()


# --- 3. a PostgreSQL restart under load ---------------------------------------------------


@asynccontextmanager
async def throwaway_postgres(request: pytest.FixtureRequest) -> AsyncIterator[ThrowawayPostgres]:
    """A PostgreSQL server of this test's own (never the shared one), removed at the end."""
    if PG_URL == "skip":
        pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")
    try:
        find_bin("initdb"), find_bin("pg_ctl")
    except ServerUnavailable as exc:
        pytest.skip(f"restarting a server needs PostgreSQL's server programs: {exc}")
    on_postgres(request)
    pg = ThrowawayPostgres()
    try:
        await anyio.to_thread.run_sync(pg.create)
        yield pg
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(pg.remove)


def _restart(pg: ThrowawayPostgres, mode: str, outage: float) -> None:
    pg.restart("fast" if mode == "fast" else "immediate", outage=outage)


async def test_a_server_restart_under_load_loses_nothing_and_the_store_recovers_by_itself(
    request: pytest.FixtureRequest,
) -> None:
    async with throwaway_postgres(request) as pg:
        # two stores: one whose retries inside a call (1 s) ride out a quick restart but
        # not the outage, one whose retries (0.1 s) ride out nothing
        configs = [
            StoreConfig(lease_seconds=8, busy_timeout=60, poll_max_seconds=0.05, retry_seconds=s)
            for s in (1.0, 0.1)
        ]
        stores = [await Store.open(pg.url, schema="faults", config=c) for c in configs]
        try:
            storm = Storm(stores, ["c0", "c1", "c2"], tasks=2, seed=3)
            restarts = [("fast", 0.0), ("immediate", 0.0), ("immediate", 2.0)]
            with anyio.fail_after(55):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(storm.run)
                    for mode, outage in [*restarts, ("", 0.0)]:
                        # the load runs (and, after a restart, runs again: the same Stores,
                        # never reopened)
                        done = storm.ledger.returned()
                        await wait_until(lambda d=done: storm.ledger.returned() >= d + 5)
                        if mode:
                            await anyio.to_thread.run_sync(_restart, pg, mode, outage)
                    storm.stop.set()
            await check_after(storm)
        finally:
            for s in stores:
                await s.close()


# --- 4. a process stopped past its lease, then resumed ------------------------------------


async def _read_line(proc: Process) -> str:
    """One line of the worker's stdout (its lines are short and flushed one by one)."""
    assert proc.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await proc.stdout.receive(1)
        line += chunk
    return line.decode().strip()


async def _stderr(proc: Process) -> str:
    if proc.stderr is None:
        return ""
    data = b""
    with anyio.move_on_after(2):
        async for chunk in proc.stderr:
            data += chunk
    return data.decode(errors="replace")[-3000:]


async def test_a_process_stopped_past_its_lease_cannot_write_when_it_resumes(
    target: Target,
) -> None:
    lease = 1.0
    store = await target.open(config=StoreConfig(lease_seconds=lease, poll_max_seconds=0.05))
    argv = [sys.executable, WORKER, "stall", target.url, target.schema or "-", "c", str(lease)]
    proc = await anyio.open_process(argv, cwd=ROOT)
    try:
        with anyio.fail_after(30):
            first = await _read_line(proc)
        assert first == "checkpointed", await _stderr(proc)
        proc.send_signal(signal.SIGSTOP)  # a pause (GC, swap, a debugger) past the lease
        with anyio.fail_after(lease + 10):  # it takes over once the lease has expired
            successor = await store.begin_turn("c", "take over")
        assert not successor.duplicate
        await successor.commit_step(*step("next"))
        await successor.finish()
        before = await store.history("c")

        proc.send_signal(signal.SIGCONT)
        assert proc.stdin is not None
        await proc.stdin.send(b"call_b done\n")  # its slow tool ends: it writes next
        with anyio.fail_after(30):
            said = [await _read_line(proc), await _read_line(proc)]
            await proc.wait()
        assert said == ["commit_step LeaseLost", "finish LeaseLost"], await _stderr(proc)

        history = await store.history("c")
        assert history == before  # the resumed process wrote nothing
        stalled = history[0].turn_id
        assert [
            (m.role, m.turn_id == stalled, m.step, m.tool_call_id, m.is_error, m.text)
            for m in history
        ] == [
            ("user", True, 0, None, False, "build the page"),
            ("assistant", True, 1, None, False, "first: working"),
            ("tool", True, 1, "first_0", False, "<p>first_0</p>"),
            # its checkpoint, committed by the takeover: call_b never answered
            ("assistant", True, 2, None, False, "inserting two sections"),
            ("tool", True, 2, "call_a", False, "inserted a"),
            ("tool", True, 2, "call_b", True, INTERRUPTED),
            ("user", False, 0, None, False, "take over"),
            ("assistant", False, 1, None, False, "next: working"),
            ("tool", False, 1, "next_0", False, "<p>next_0</p>"),
            ("tool", False, 1, "next_1", False, "<p>next_1</p>"),
        ]
        assert (await store.turn_status(stalled)).status == "expired"
        await assert_clean(store)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        with anyio.fail_after(10):
            await proc.wait()
        await proc.aclose()
        await store.close()


# --- 5. SQLite: a process killed inside a write transaction -------------------------------


def _locked(path: Path) -> bool:
    """Whether another connection holds SQLite's write lock on ``path`` right now."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc) or "busy" in str(exc), exc
        return True
    else:
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


async def test_sqlite_survives_a_process_killed_inside_its_write_transaction(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    async with Store.open(url) as store:
        turn = await store.begin_turn("c", "before")
        await turn.finish(*step("kept"))
    argv = [sys.executable, WORKER, "hold-sqlite", str(path), "c"]
    proc = await anyio.open_process(argv, cwd=ROOT)
    try:
        with anyio.fail_after(30):
            said = await _read_line(proc)
        assert said.startswith("in transaction "), await _stderr(proc)
        assert int(said.split()[-1]) > 0  # its uncommitted pages are in the WAL
        assert _locked(path)  # it holds the write lock, mid-transaction
        proc.kill()  # SIGKILL: no rollback, no unlock, no goodbye
        with anyio.fail_after(10):
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()

    config = StoreConfig(busy_timeout=5)
    async with Store.open(url, config=config, sqlite_busy_timeout=5) as store:
        await assert_clean(store)
        with anyio.fail_after(10):  # the dead process's running turn did not commit
            turn = await store.begin_turn("c", "after", on_busy="fail")
        await turn.commit_step(*step("after"))
        await turn.finish()
        history = await store.history("c")
        assert [m.text for m in history if m.role != "tool"] == [
            "before",
            "kept: working",
            "after",
            "after: working",
        ]
        assert [m.position for m in history] == list(range(len(history)))
        async with hooks.backend(store).read() as tx:
            turns = await tx.all("check_turns")
        assert [t.conversation_id for t in turns] == ["c", "c"]  # no ghost committed
        await assert_clean(store)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM turnstore_conversations").fetchone() == (1,)


async def test_sqlite_survives_a_store_process_killed_while_it_commits_steps(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    conversations = ["c0", "c1", "c2", "c3"]
    lease = 1.0
    await (await Store.open(url)).close()  # migrated before the worker starts
    argv = [sys.executable, WORKER, "steps", url, "-", ",".join(conversations), str(lease)]
    proc = await anyio.open_process(argv, cwd=ROOT)
    lines: list[str] = []
    try:
        with anyio.fail_after(60):
            while len(lines) < 40:  # its writes go back to back: it dies inside one
                lines.append(await _read_line(proc))
        proc.kill()
        with anyio.fail_after(10):
            await proc.wait()
            assert proc.stdout is not None
            rest = b""
            async for chunk in proc.stdout:  # what it said before it died
                rest += chunk
        lines += rest.decode().splitlines()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()
    committed: list[tuple[str, str, int, str]] = []
    for line in lines:
        assert line.startswith("committed "), line
        cid, turn_id, number, prefix = line.split()[1:]
        committed.append((cid, turn_id, int(number), prefix))

    config = StoreConfig(lease_seconds=lease, busy_timeout=30, poll_max_seconds=0.05)
    async with Store.open(url, config=config) as store:
        await assert_clean(store)
        for cid in conversations:
            history = await store.history(cid)
            assert [m.position for m in history] == list(range(len(history)))
            steps = [(m.turn_id, m.step, m.text) for m in history if m.role == "assistant"]
            mine = [(t, n, f"{p}: working") for c, t, n, p in committed if c == cid]
            assert steps[: len(mine)] == mine  # each acknowledged step once, in order
            assert len(steps) <= len(mine) + 1  # at most the one it died in, not told
        with anyio.fail_after(30):  # each conversation is taken over once the lease expired
            for cid in conversations:
                turn = await store.begin_turn(cid, "after the crash")
                await turn.finish(*step(f"{cid}-after"))
        await assert_clean(store)
