"""A turn that ends hands its conversation over, in the same transaction, to the next turn
waiting in line: that turn starts (its user message written) before its submitter hears
of it. A submitter in this process is told at once; one elsewhere at its next poll."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from store import ConversationBusy, Store, claim, hooks
from store.claim import Submit

from .conftest import OpenStore, Target
from .helpers import SLOW_POLLS, assert_clean, count_rows, step, wait_queued

# also on PostgreSQL with the Python claim rules (tests/conftest.py)
BOTH_CLAIM_PATHS = True
# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus


async def _status(store: Store, turn_id: str) -> str:
    return (await store.turn_status(turn_id)).status


async def _queued_turn_id(store: Store, conversation_id: str) -> str:
    async with hooks.backend(store).read() as tx:
        turns = await tx.all("check_turns")
    (queued,) = [
        t.id for t in turns if t.conversation_id == conversation_id and t.status == "queued"
    ]
    return queued


async def test_ending_a_turn_starts_the_next_one_in_line(
    store: Store, open_store: OpenStore
) -> None:
    other = await open_store(config=SLOW_POLLS)  # another process, which polls rarely
    first = await store.begin_turn("c", "first")
    started: list[Any] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def submit() -> None:
            started.append(await other.begin_turn("c", "second", timeout=60))
            done.set()

        tg.start_soon(submit)
        await wait_queued(store, "c", 1)  # "second" waits in line
        waiting = await _queued_turn_id(store, "c")
        await first.commit_step(*step("s1"))
        await first.finish("done")
        # Started by the end, in its transaction: its submitter has not polled yet.
        assert await _status(store, waiting) == "running"
        assert [m.text for m in await store.history("c")][-1] == "second"
        with anyio.fail_after(40):
            await done.wait()
    (second,) = started
    assert second.id == waiting and not second.duplicate
    await second.commit_step(*step("s2"))
    await second.finish()
    assert [m.role for m in await store.history("c")] == [
        "user", "assistant", "tool", "tool", "assistant", "user", "assistant", "tool", "tool",
    ]  # fmt: skip
    await assert_clean(store)


async def test_a_waiter_in_this_process_is_told_without_polling(store: Store) -> None:
    first = await store.begin_turn("c", "first")
    _, polls_before = hooks.claim_decisions(store)
    started: list[Any] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def submit() -> None:
                started.append(await store.begin_turn("c", "second", timeout=60))

            tg.start_soon(submit)
            await wait_queued(store, "c", 1)
            await first.finish()
    assert hooks.claim_decisions(store)[1] == polls_before  # the waiter never polled
    await started[0].finish()
    assert [m.text for m in await store.history("c")] == ["first", "second"]


async def test_duplicates_of_a_turn_here_learn_its_outcome_without_reading(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    turn = await store.begin_turn("c", "go", idempotency_key="k")
    duplicate = await store.begin_turn("c", "go", idempotency_key="k")
    assert duplicate.duplicate
    reads: list[str] = []
    backend = hooks.backend(store)
    read = backend.read

    def counting() -> Any:
        reads.append("read")
        return read()

    monkeypatch.setattr(backend, "read", counting)  # every read of the store's database
    async with anyio.create_task_group() as tg:
        outcomes: list[Any] = []

        async def wait() -> None:
            outcomes.append(await duplicate.wait(timeout=5))

        tg.start_soon(wait)
        await anyio.sleep(0.2)
        await turn.commit_step(*step("s"))
        await turn.finish()
    assert outcomes[0].status == "finished" and outcomes[0].steps == 1
    assert reads == []


async def test_a_waiter_that_times_out_as_it_is_handed_over_runs_its_turn(
    store: Store,
) -> None:
    """The race of a deadline and a hand-over: the waiter gets the turn that started for
    it (its message is written), not ConversationBusy."""
    first = await store.begin_turn("c", "first")
    content = '[{"type":"text","text":"second"}]'
    submit = Submit("c", content, "hash", "k2", hooks.owner(store))
    queued = await claim._decide(hooks.core(store), submit, "turn_second", "wait", first=True)
    assert isinstance(queued, claim.Queued)
    await first.finish()  # hands over to turn_second
    started = await claim._give_up(hooks.core(store), submit, "turn_second", "timed out")
    assert isinstance(started, claim.Claimed) and started.turn_id == "turn_second"
    assert await _status(store, "turn_second") == "running"


async def test_a_cancelled_waiter_that_was_handed_over_ends_its_turn_and_passes_on(
    store: Store, open_store: OpenStore
) -> None:
    other = await open_store(config=SLOW_POLLS)
    first = await store.begin_turn("c", "first")
    started = anyio.Event()
    third: list[Any] = []
    second_submitter = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_submit_in, second_submitter, other, "second")
        await wait_queued(store, "c", 1)
        second = await _queued_turn_id(store, "c")

        async def submit_third() -> None:
            third.append(await store.begin_turn("c", "third", timeout=30))
            started.set()

        tg.start_soon(submit_third)
        await wait_queued(store, "c", 2)
        await first.finish()  # hands over to "second", whose submitter sleeps
        assert await _status(store, second) == "running"
        second_submitter.cancel()  # it gives up, learns it was started, ends it
        with anyio.fail_after(10):
            await started.wait()  # ... which hands over to "third"
    assert (await store.turn_status(second)).status == "interrupted"
    assert [m.text for m in await store.history("c")] == ["first", "second", "third"]
    await third[0].finish()
    await assert_clean(store)


async def _submit_in(scope: anyio.CancelScope, store: Store, text: str) -> None:
    with scope:
        await store.begin_turn("c", text, timeout=60)


async def test_a_timed_out_waiter_leaves_the_line_and_the_next_one_is_handed_over(
    store: Store,
) -> None:
    first = await store.begin_turn("c", "first")
    with pytest.raises(ConversationBusy):
        await store.begin_turn("c", "impatient", timeout=0.2)
    async with anyio.create_task_group() as tg:
        started: list[Any] = []

        async def submit() -> None:
            started.append(await store.begin_turn("c", "patient", timeout=30))

        tg.start_soon(submit)
        await wait_queued(store, "c", 1)
        await first.finish()
    await started[0].finish()
    assert [m.text for m in await store.history("c")] == ["first", "patient"]
    assert await count_rows(store, "c") == (3, 2)  # the impatient turn: refused, no message


@pytest.mark.parametrize("python_claims", [False, True])
async def test_postgres_takes_claims_by_the_python_rules_when_told(
    pg_target: Target, python_claims: bool
) -> None:
    """``hooks.use_python_claims``: beginning and ending turns, a hand-over included, leave
    ``turnstore_apply``'s batches alone (what the postgres-pyclaim runs of the claim suites
    test is the Python rules); without it they are all batches."""
    store = await pg_target.open()
    try:
        if python_claims:
            hooks.use_python_claims(store)
        backend = hooks.backend(store)
        before = backend.write_batches()
        first = await store.begin_turn("c", "first")
        async with anyio.create_task_group() as tg:

            async def second() -> None:
                turn = await store.begin_turn("c", "second", timeout=60)
                await turn.finish()

            tg.start_soon(second)
            await wait_queued(store, "c", 1)
            await first.finish()  # hands over to "second"
        batches, writes = (a - b for a, b in zip(backend.write_batches(), before, strict=True))
        assert (writes == 0) == python_claims, (batches, writes)
        assert [m.text for m in await store.history("c")] == ["first", "second"]
        await assert_clean(store)
    finally:
        await store.close()
