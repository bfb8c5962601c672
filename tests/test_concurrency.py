"""One turn at a time per conversation, with real concurrency (many tasks, several stores)."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from store import ConversationBusy, InvalidMessage, Store, StoreConfig, hooks

from .conftest import OpenStore, Target
from .helpers import assert_clean, count_rows, step, wait_queued

# also on PostgreSQL with the Python claim rules (tests/conftest.py)
BOTH_CLAIM_PATHS = True
# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus


async def test_fifty_concurrent_submits_with_one_key_make_one_turn(
    store: Store, open_store: OpenStore
) -> None:
    other = await open_store()  # a second pool, as a second server process would have
    handles = []

    async def submit(i: int) -> None:
        s = store if i % 2 else other
        handles.append(await s.begin_turn("c", "build it", idempotency_key="req-1"))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(submit, i)
    owners = [h for h in handles if not h.duplicate]
    assert len(owners) == 1
    assert {h.id for h in handles} == {owners[0].id}
    assert await count_rows(store, "c") == (1, 1)
    await owners[0].finish()
    await assert_clean(store)


async def test_busy_conversation_refuses_at_once_with_on_busy_fail(store: Store) -> None:
    turn = await store.begin_turn("c", "first")
    before = await count_rows(store)
    with anyio.fail_after(2):
        with pytest.raises(ConversationBusy) as info:
            await store.begin_turn("c", "second", on_busy="fail")
    assert info.value.conversation_id == "c"
    assert await count_rows(store) == before
    await turn.finish()


async def test_waiting_is_bounded_by_timeout_and_the_key_can_retry(store: Store) -> None:
    turn = await store.begin_turn("c", "first")
    # the holder never ends while "second" waits: it can only come back by giving up (the
    # bound is a guard against a hang, far above the timeout; it is not what is tested)
    with anyio.fail_after(30), pytest.raises(ConversationBusy) as info:
        await store.begin_turn("c", "second", idempotency_key="k2", timeout=0.3)
    assert info.value.waited >= 0.3  # it waited its whole timeout, no less
    await turn.finish()
    retry = await store.begin_turn("c", "second", idempotency_key="k2", timeout=5)
    assert not retry.duplicate
    await retry.finish()
    assert [m.text for m in await store.history("c")] == ["first", "second"]
    await assert_clean(store)


async def test_waiters_are_served_first_come_first_served(store: Store) -> None:
    first = await store.begin_turn("c", "first")
    order: list[str] = []

    async def submit(name: str) -> None:
        turn = await store.begin_turn("c", name, timeout=10)
        order.append(name)
        await anyio.sleep(0.02)
        await turn.finish()

    async with anyio.create_task_group() as tg:
        for n, name in enumerate(("second", "third", "fourth"), start=1):
            tg.start_soon(submit, name)
            await wait_queued(store, "c", n)  # it is in line before the next one comes
        await first.finish()
    assert order == ["second", "third", "fourth"]
    await assert_clean(store)


async def test_a_cancelled_waiter_leaves_the_queue(store: Store) -> None:
    first = await store.begin_turn("c", "first")
    with anyio.move_on_after(0.2):
        await store.begin_turn("c", "impatient", timeout=10)
    await first.finish()
    with anyio.fail_after(5):
        nxt = await store.begin_turn("c", "next")
    await nxt.finish()
    await assert_clean(store)


async def test_many_tasks_many_conversations_stay_consistent(
    target: Target, open_store: OpenStore
) -> None:
    """32 tasks x 20 conversations, mixed keys and repeated keys, across two stores."""
    config = StoreConfig(busy_timeout=60, poll_max_seconds=0.02)
    stores = [await open_store(config=config), await open_store(config=config)]
    rng = random.Random(1234)
    plan = [(f"c{rng.randrange(20)}", rng.randrange(60), rng.randint(1, 3)) for _ in range(160)]
    expected_keys: dict[tuple[str, str], int] = {}

    async def worker(w: int) -> None:
        s = stores[w % 2]
        for cid, key_no, steps in plan[w::32]:
            key = f"key-{key_no}" if key_no % 3 else None  # a third submit without a key
            text = f"prompt {key_no}"
            turn = await s.begin_turn(cid, text, idempotency_key=key)
            if turn.duplicate:
                continue
            for n in range(steps):
                await turn.commit_step(*step(f"{turn.id}_{n}", rng.randint(0, 3)))
                await anyio.lowlevel.checkpoint()
            await turn.finish()
            if key:
                expected_keys[(cid, key)] = expected_keys.get((cid, key), 0) + 1

    async with anyio.create_task_group() as tg:
        for w in range(32):
            tg.start_soon(worker, w)
    assert all(n == 1 for n in expected_keys.values()), "a key made two turns"
    await assert_clean(stores[0])
    for cid in {p[0] for p in plan}:
        positions = [m.position for m in await stores[0].history(cid)]
        assert positions == list(range(len(positions)))


async def test_a_double_click_in_one_process_asks_the_database_once(store: Store) -> None:
    handles = []

    async def submit() -> None:
        handles.append(await store.begin_turn("c", "build it", idempotency_key="req-1"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(submit)
    assert hooks.claim_decisions(store) == (1, 0)  # the other nine waited for its decision
    assert len({h.id for h in handles}) == 1 and sum(not h.duplicate for h in handles) == 1
    with pytest.raises(InvalidMessage, match="different message"):  # not a double click
        await store.begin_turn("c", "something else", idempotency_key="req-1")
    await next(h for h in handles if not h.duplicate).finish()
    assert await count_rows(store, "c") == (1, 1)
