"""A submit that waits in line, is handed the conversation while its process is paused,
and is taken over before it wakes: it must learn that with ``TurnTakenOver``, and its
user message stays in history once (never claimed a second time).

The pause is what SIGSTOP does to a process: none of its database calls goes out. Here the
waiting store's calls are held back at its backend, deterministically.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from store import Store, StoreConfig, TurnTakenOver, hooks

from .conftest import OpenStore
from .helpers import assert_clean, wait_queued

# also on PostgreSQL with the Python claim rules (tests/conftest.py)
BOTH_CLAIM_PATHS = True
# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus

LEASE = 1.0


class Pause:
    """Holds back every claim and transaction of one store while set."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paused = False
        self.resumed = anyio.Event()
        backend = hooks.backend(store)
        real_claim_fast, real_transaction = backend.claim_fast, backend.transaction

        async def claim_fast(request: Any, **kw: Any) -> Any:
            await self._gate()
            return await real_claim_fast(request, **kw)

        async def transaction(conversation_id: str, work: Any, **kw: Any) -> Any:
            await self._gate()
            return await real_transaction(conversation_id, work, **kw)

        monkeypatch.setattr(backend, "claim_fast", claim_fast)
        monkeypatch.setattr(backend, "transaction", transaction)

    async def _gate(self) -> None:
        if self.paused:
            await self.resumed.wait()


async def test_a_waiter_taken_over_while_away_is_told_so(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StoreConfig(lease_seconds=LEASE, poll_max_seconds=0.05)
    a = await open_store(config=config)
    b = await open_store(config=config)
    pause = Pause(b, monkeypatch)
    first = await a.begin_turn("c", "first")
    outcome: dict[str, BaseException] = {}

    async def submit_second() -> None:
        try:
            await b.begin_turn("c", "second", on_busy="wait", timeout=60)
        except BaseException as exc:  # what the test is about
            outcome["error"] = exc

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit_second)
            await wait_queued(a, "c", 1)  # "second" waits in line
            pause.paused = True  # b's process stops here
            await anyio.sleep(0.1)
            await first.finish()  # hands the conversation over to "second"
            await anyio.sleep(LEASE + 0.3)  # b cannot renew: the lease runs out
            third = await a.begin_turn("c", "third")  # takes over: "second" expired
            await third.finish()
            pause.resumed.set()  # b wakes and polls

    error = outcome.get("error")
    assert isinstance(error, TurnTakenOver), repr(error)
    assert error.status == "expired"
    history = await a.history("c")
    assert [m.text for m in history if m.role == "user"] == ["first", "second", "third"]
    assert next(m.turn_id for m in history if m.text == "second") == error.turn_id
    await assert_clean(a)
    # the conversation goes on at once
    with anyio.fail_after(10):
        fourth = await b.begin_turn("c", "fourth", on_busy="fail")
    await fourth.finish()
    await assert_clean(a)
