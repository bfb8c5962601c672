"""Group commit: writes sent at the same moment share a batch, each gets its own answer, a
refused write fails alone, a broken connection fails its whole batch, and a caller's
cancellation never cuts a batch short (on its own, and on both databases)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from store import InvalidMessage, Store, hooks
from store.group_commit import GroupCommit

from .helpers import assert_clean, step, wait_until


class Broken(ConnectionError):
    pass


class Recorder:
    """An ``apply`` that records its batches; writes named "bad" make a batch fail. A batch
    holding a write of ``held`` waits for ``release``: the tests order what they check by
    events, never by how long something takes."""

    def __init__(self, seconds: float = 0.01, held: Sequence[str] = ()) -> None:
        self.batches: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self.seconds = seconds
        self.broken = False
        self.held = set(held)
        self.release = anyio.Event()

    async def __call__(self, ops: Sequence[str]) -> list[str]:
        self.batches.append(list(ops))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.held.intersection(ops):
                await self.release.wait()
            await anyio.sleep(self.seconds)
        finally:
            self.running -= 1
        if self.broken:
            raise Broken("connection lost")
        if "bad" in ops:
            raise ValueError("refused")
        return [f"done:{op}" for op in ops]


def _commit(apply: Recorder, **kwargs: int) -> GroupCommit[str, str]:
    return GroupCommit(apply, is_connection_error=lambda e: isinstance(e, Broken), **kwargs)


async def test_writes_sent_together_share_batches_and_get_their_own_answers() -> None:
    apply = Recorder()
    commit = _commit(apply, max_concurrent=2)
    answers: dict[str, str] = {}

    async def send(op: str) -> None:
        answers[op] = await commit.submit(op)

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(send, f"w{i}")
    assert answers == {f"w{i}": f"done:w{i}" for i in range(40)}
    assert sorted(op for batch in apply.batches for op in batch) == sorted(answers)
    assert len(apply.batches) < 10  # 40 writes, far fewer round trips
    assert apply.most_running <= 2
    assert (commit.batches, commit.writes) == (len(apply.batches), 40)


class KeyedRecorder(Recorder):
    """Also records, for writes named "<key>:<n>", which keys were in flight at once."""

    def __init__(self, seconds: float = 0.01) -> None:
        super().__init__(seconds)
        self.in_flight: list[str] = []
        self.overlaps: list[str] = []

    async def __call__(self, ops: Sequence[str]) -> list[str]:
        keys = [op.split(":")[0] for op in ops]
        self.overlaps += [k for k in keys if k in self.in_flight]
        self.in_flight += keys
        try:
            return await super().__call__(ops)
        finally:
            for k in keys:
                self.in_flight.remove(k)


async def test_writes_with_one_conflict_key_are_never_in_flight_at_once() -> None:
    """Two writes on one conversation would wait for its lock in the database: the second
    waits in the queue instead, rides in a later batch, and the order of each key's writes
    is kept; writes on other keys still run in the other slot."""
    apply = KeyedRecorder()
    commit: GroupCommit[str, str] = GroupCommit(
        apply,
        is_connection_error=lambda e: isinstance(e, Broken),
        max_concurrent=2,
        conflict_key=lambda op: op.split(":")[0],
    )
    answers: dict[str, str] = {}

    async def send(op: str) -> None:
        answers[op] = await commit.submit(op)

    async def writer(key: str) -> None:
        for n in range(6):  # one key's writes are sent one after another, or all at once
            if key == "burst":
                async with anyio.create_task_group() as tg:
                    for m in range(4):
                        tg.start_soon(send, f"{key}:{n}.{m}")
            else:
                await send(f"{key}:{n}")

    async with anyio.create_task_group() as tg:
        for key in ("a", "b", "c", "burst"):
            tg.start_soon(writer, key)
    assert len(answers) == 3 * 6 + 6 * 4
    assert all(answer == f"done:{op}" for op, answer in answers.items())
    assert apply.overlaps == []
    assert apply.most_running == 2  # the other slot was used
    applied = [op for batch in apply.batches for op in batch]
    for key in ("a", "b", "c"):
        in_order = [f"{key}:{n}" for n in range(6)]
        assert [op for op in applied if op.startswith(f"{key}:")] == in_order
    burst = [int(op.split(":")[1].split(".")[0]) for op in applied if op.startswith("burst:")]
    assert burst == sorted(burst)


async def test_a_lone_write_is_applied_at_once() -> None:
    apply = Recorder(seconds=0)
    commit = _commit(apply)
    assert await commit.submit("only") == "done:only"
    assert apply.batches == [["only"]]


async def test_a_refused_write_fails_alone_and_the_others_land() -> None:
    apply = Recorder(held=["first"])
    commit = _commit(apply, max_concurrent=1)
    results: dict[str, object] = {}

    async def send(op: str) -> None:
        try:
            results[op] = await commit.submit(op)
        except ValueError as exc:
            results[op] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "first")  # runs alone; the rest queue behind it
        await wait_until(lambda: commit.running() == 1)
        for op in ("a", "bad", "b"):
            tg.start_soon(send, op)
        await wait_until(lambda: commit.queued() == 3)
        apply.release.set()
    assert results["a"] == "done:a" and results["b"] == "done:b"
    assert results["first"] == "done:first"
    assert isinstance(results["bad"], ValueError)
    assert ["a", "bad", "b"] in apply.batches  # tried together, then one by one
    assert ["a"] in apply.batches and ["bad"] in apply.batches and ["b"] in apply.batches


async def test_a_broken_connection_fails_the_whole_batch_without_retrying_it() -> None:
    apply = Recorder(held=["first"])
    commit = _commit(apply, max_concurrent=1)
    errors: list[BaseException] = []

    async def send(op: str) -> None:
        try:
            await commit.submit(op)
        except Broken as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "first")
        await wait_until(lambda: commit.running() == 1)
        apply.broken = True
        for op in ("a", "b", "c"):
            tg.start_soon(send, op)
        await wait_until(lambda: commit.queued() == 3)
        apply.release.set()
    assert len(errors) == 4  # each caller's own retry decides what to do
    assert apply.batches == [["first"], ["a", "b", "c"]]


async def test_a_cancelled_caller_does_not_cut_its_batch_short() -> None:
    apply = Recorder(held=["other"])
    commit = _commit(apply, max_concurrent=1)
    answers: list[str] = []

    async def send(op: str) -> None:
        answers.append(await commit.submit(op))

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "other")
        await wait_until(lambda: commit.running() == 1)
        with anyio.CancelScope() as scope:

            async def cancel_while_mine_waits() -> None:
                await wait_until(lambda: commit.queued() == 1)
                scope.cancel()  # "mine" waits its turn behind "other"
                apply.release.set()

            tg.start_soon(cancel_while_mine_waits)
            answers.append(await commit.submit("mine"))
    assert scope.cancel_called
    assert sorted(op for batch in apply.batches for op in batch) == ["mine", "other"]
    assert sorted(answers) == ["done:mine", "done:other"]  # it landed, and says so


async def test_a_lingering_write_rides_in_the_next_batch_another_write_starts() -> None:
    apply = Recorder(seconds=0)
    commit = _commit(apply, max_concurrent=1)
    answers: dict[str, str] = {}

    async def send(op: str, linger: float = 0.0) -> None:
        answers[op] = await commit.submit(op, linger=linger)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "rider", 30.0)
        await wait_until(lambda: commit.lingering() == 1)
        assert apply.batches == []  # it started no batch of its own
        tg.start_soon(send, "leader")
    assert answers == {"rider": "done:rider", "leader": "done:leader"}
    assert apply.batches == [["rider", "leader"]]


async def test_a_lingering_write_alone_is_applied_once_its_linger_has_passed() -> None:
    apply = Recorder(seconds=0)
    commit = _commit(apply)
    started = anyio.current_time()
    assert await commit.submit("alone", linger=0.1) == "done:alone"
    assert anyio.current_time() - started >= 0.1
    assert apply.batches == [["alone"]]


async def test_a_lingering_write_is_not_handed_a_free_slot_it_would_use_alone() -> None:
    """A lingering write queues behind a running batch. When that batch ends it keeps
    lingering (no write to share a batch with yet) and rides with the next write sent."""
    apply = Recorder(seconds=0, held=["first"])
    commit = _commit(apply, max_concurrent=1)
    answers: dict[str, str] = {}

    async def send(op: str, linger: float = 0.0) -> None:
        answers[op] = await commit.submit(op, linger=linger)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send, "first")
        await wait_until(lambda: commit.running() == 1)
        tg.start_soon(send, "rider", 30.0)
        await wait_until(lambda: commit.lingering() == 1)
        apply.release.set()
        await wait_until(lambda: "first" in answers)  # "first" has ended, its slot is free
        await wait_until(lambda: commit.running() == 0)
        assert commit.lingering() == 1 and apply.batches == [["first"]]
        tg.start_soon(send, "late")
    assert apply.batches == [["first"], ["rider", "late"]]
    assert len(answers) == 3


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        _commit(Recorder(), max_concurrent=0)
    with pytest.raises(ValueError):
        _commit(Recorder(), max_batch=0)


async def test_a_refused_step_in_a_shared_batch_fails_alone_on_the_database(
    store: Store,
) -> None:
    """Twenty turns commit a step at the same moment; one step reuses a tool call id of an
    earlier turn of its conversation (the database refuses it). It fails with the
    library's error; the other nineteen steps land, though they shared its batch."""
    turns = [await store.begin_turn(f"c{i}", f"prompt {i}") for i in range(20)]
    await turns[7].commit_step(*step("used", calls=2))
    await turns[7].finish()
    turns[7] = await store.begin_turn("c7", "again")
    before = hooks.backend(store).write_batches()
    outcomes: dict[int, object] = {}

    async def commit(i: int) -> None:
        try:
            outcomes[i] = await turns[i].commit_step(*step("used" if i == 7 else f"s{i}"))
        except InvalidMessage as exc:
            outcomes[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(commit, i)
    batches, writes = (
        a - b for a, b in zip(hooks.backend(store).write_batches(), before, strict=True)
    )
    assert batches < writes  # the writes did share batches
    assert isinstance(outcomes.pop(7), InvalidMessage)
    assert set(outcomes.values()) == {1}  # every other turn committed its first step
    for i, turn in enumerate(turns):
        if i != 7:
            await turn.finish()
    await assert_clean(store)
