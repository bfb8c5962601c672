"""A submit on a conversation that a turn of this process holds will queue behind that turn:
it lingers, and rides in the holder's next write (one transaction and one round trip for
both) instead of taking a transaction of its own on the conversation's critical path. It
lingers only a bounded time, and never when the caller asked not to wait."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from store import ConversationBusy, Store, claim, hooks

from .conftest import Target
from .helpers import SLOW_POLLS, assert_clean, lingering, step, wait_until


def _since(store: Store, before: tuple[int, int]) -> tuple[int, int]:
    """(batches, writes) sent since ``before``."""
    batches, writes = hooks.backend(store).write_batches()
    return batches - before[0], writes - before[1]


@pytest.fixture
def long_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    # long enough that only the holder's write can have sent the lingering claim
    monkeypatch.setattr(claim, "CLAIM_LINGER_SECONDS", 30.0)


@pytest.mark.usefixtures("long_linger")
async def test_a_submit_behind_a_local_turn_rides_in_that_turns_next_step(store: Store) -> None:
    first = await store.begin_turn("c", "first")
    before = hooks.backend(store).write_batches()
    queued: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def submit() -> None:
            queued.append(await store.begin_turn("c", "second", timeout=60))

        tg.start_soon(submit)
        await wait_until(lambda: lingering(store) == 1)
        assert _since(store, before) == (0, 0)  # the second submit has sent nothing yet
        await first.commit_step(*step("s1"))
        assert _since(store, before) == (1, 2)  # its claim rode with the step
        await first.finish()  # hands the conversation over to the second
    (second,) = queued
    assert not second.duplicate and second.status == "running"
    await second.commit_step(*step("s2"))
    await second.finish()
    assert [m.text for m in await store.history("c") if m.role == "user"] == ["first", "second"]
    await assert_clean(store)


@pytest.mark.usefixtures("long_linger")
async def test_the_next_submit_of_a_handed_over_conversation_rides_with_its_new_turn(
    store: Store,
) -> None:
    """The turn that ends hands the conversation to a waiter here, whose Turn is not built
    yet; a submit sent at that very moment (the finisher's next one) still lingers, and
    rides in the new turn's first step."""
    first = await store.begin_turn("c", "first")
    handed: list[Any] = []
    started = anyio.Event()
    third: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def wait_in_line() -> None:
            handed.append(await store.begin_turn("c", "second", timeout=60))
            started.set()

        async def finish_then_submit() -> None:
            await first.finish()  # hands over to "second"; no await before the next submit
            third.append(await store.begin_turn("c", "third", timeout=60))

        tg.start_soon(wait_in_line)
        await wait_until(lambda: lingering(store) == 1)
        await first.commit_step(*step("s1"))  # "second" rides with it: it waits in line
        before = hooks.backend(store).write_batches()
        tg.start_soon(finish_then_submit)
        with anyio.fail_after(10):
            await started.wait()
        await wait_until(lambda: lingering(store) == 1)  # "third"
        assert _since(store, before) == (1, 1)  # the end; "third" lingers
        (second,) = handed
        await second.commit_step(*step("s2"))
        assert _since(store, before) == (2, 3)  # "third" rode with the step
        await second.finish()
    assert [t.status for t in third] == ["running"]
    await third[0].finish()
    assert [m.text for m in await store.history("c") if m.role == "user"] == [
        "first", "second", "third",
    ]  # fmt: skip
    await assert_clean(store)


async def test_a_lingering_submit_goes_alone_when_its_linger_runs_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claim, "CLAIM_LINGER_SECONDS", 0.2)
    first = await store.begin_turn("c", "first")  # runs, and writes nothing more for now
    before = hooks.backend(store).write_batches()
    started = anyio.current_time()
    with pytest.raises(ConversationBusy):
        await store.begin_turn("c", "second", timeout=0.5)
    assert anyio.current_time() - started >= 0.2
    batches, writes = _since(store, before)
    assert writes >= 2 and batches == writes  # its claim went alone, then it gave up alone
    await first.finish()
    await assert_clean(store)


@pytest.mark.usefixtures("long_linger")
async def test_a_submit_that_may_not_wait_is_refused_at_once(store: Store) -> None:
    first = await store.begin_turn("c", "first")
    with anyio.fail_after(5):  # not after the linger
        with pytest.raises(ConversationBusy):
            await store.begin_turn("c", "second", on_busy="fail")
    await first.finish()


async def test_a_submit_that_rides_with_the_holders_end_gets_the_turn_without_a_poll(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lingering claim and the end share a transaction. On SQLite the claim runs first
    (it queues) and the end hands the conversation to it before its submitter joins the
    line; on PostgreSQL the end runs first and the claim finds the conversation free.
    Either way the submitter has the turn at once, without a poll (here one every 3 s)."""
    monkeypatch.setattr(claim, "CLAIM_LINGER_SECONDS", 30.0)
    store = await target.open(config=SLOW_POLLS)
    try:
        first = await store.begin_turn("c", "first")
        got: list[Any] = []
        has_it = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def submit() -> None:
                got.append(await store.begin_turn("c", "second", timeout=60))
                has_it.set()

            tg.start_soon(submit)
            await wait_until(lambda: lingering(store) == 1)
            before = hooks.backend(store).write_batches()
            with anyio.fail_after(30):  # a guard against a hang, not a measure
                await first.finish()
                await has_it.wait()
            assert _since(store, before) == (1, 2)  # the end and the claim: no poll
        (second,) = got
        assert second.status == "running"
        await second.finish()
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_waiter_is_not_woken_when_another_turn_here_took_the_conversation(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two submits ride with the holder's end in a batch that another write leads. On
    PostgreSQL the end runs first and hands over to nobody, the first claim takes the
    conversation and the second queues behind it: the end must not then wake the second
    to poll (the first turn will hand over to it when it ends)."""
    monkeypatch.setattr(claim, "CLAIM_LINGER_SECONDS", 30.0)
    store = await target.open(config=SLOW_POLLS, pool_size=1)  # one batch at a time
    writes = hooks.group_commit(store)
    slow: list[bool] = []
    release = anyio.Event()

    def held(apply: Any) -> Any:
        async def slowly(batch: Any) -> Any:
            if slow:
                slow.clear()
                await release.wait()  # until the others have queued behind it
            return await apply(batch)

        return slowly

    writes.intercept(held)
    try:
        holder = await store.begin_turn("c", "first")
        others = [await store.begin_turn(cid, "other") for cid in ("d", "e")]
        got: dict[str, Any] = {}
        done = {name: anyio.Event() for name in ("second", "third")}
        async with anyio.create_task_group() as tg:

            async def submit(text: str) -> None:
                got[text] = await store.begin_turn("c", text, timeout=60)
                done[text].set()

            slow.append(True)
            tg.start_soon(others[0].commit_step, *step("d"))  # holds the batch slot
            await wait_until(lambda: writes.running() == 1)
            before = hooks.backend(store).write_batches()
            tg.start_soon(submit, "second")
            await wait_until(lambda: lingering(store) == 1)
            tg.start_soon(submit, "third")
            await wait_until(lambda: lingering(store) == 2)
            tg.start_soon(others[1].commit_step, *step("e"))  # will lead the next batch
            await wait_until(lambda: writes.queued() == 3)
            tg.start_soon(holder.finish)  # rides in it
            await wait_until(lambda: writes.queued() == 4)
            release.set()
            with anyio.fail_after(30):
                await done["second"].wait()
            # a wrongly woken waiter polls at once; a rightly sleeping one not before its
            # heartbeat period (SLOW_POLLS: 10 s), far beyond this
            await anyio.sleep(0.5)
            assert _since(store, before) == (1, 4)  # no poll by the one still waiting
            await got["second"].finish()
            with anyio.fail_after(30):
                await done["third"].wait()
            await got["third"].finish()
        for turn in others:
            await turn.finish()
        assert [m.text for m in await store.history("c") if m.role == "user"] == [
            "first", "second", "third",
        ]  # fmt: skip
        await assert_clean(store)
    finally:
        await store.close()


async def test_a_submit_cancelled_while_its_claim_lingers_leaves_nothing_waiting(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim is shielded: it still lands (queued) when its linger runs out, and the
    cancelled submitter then leaves the line. The holder ends as usual, with no hand-over
    to a turn that nobody runs."""
    monkeypatch.setattr(claim, "CLAIM_LINGER_SECONDS", 0.3)
    holder = await store.begin_turn("c", "first")
    with anyio.move_on_after(0.1) as scope:
        await store.begin_turn("c", "second", timeout=60)
    assert scope.cancelled_caught
    async with hooks.backend(store).read() as tx:
        turns = await tx.all("check_turns")
    assert sorted(t.status for t in turns) == ["refused", "running"]
    await holder.finish()
    assert (await store.turn_status(holder.id)).status == "finished"
    assert [m.text for m in await store.history("c") if m.role == "user"] == ["first"]
    after = await store.begin_turn("c", "third")  # the conversation is free
    assert after.status == "running" and not after.duplicate
    await after.finish()
    await assert_clean(store)
