"""In-process wake-ups: when a turn ends in this process, wake the oldest local waiter for
its conversation and whoever awaits its outcome, instead of letting them sleep until their
next poll. An optimisation only: polling the database alone is correct, and is what
waiters in other processes rely on."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()


class LocalWakeups:
    def __init__(self) -> None:
        self._queues: dict[str, deque[Waiter]] = {}
        self._ended: dict[str, anyio.Event] = {}

    @contextmanager
    def queued(self, conversation_id: str) -> Iterator[Waiter]:
        """Join this process's first-come-first-served line for a conversation."""
        waiter = Waiter()
        line = self._queues.setdefault(conversation_id, deque())
        line.append(waiter)
        try:
            yield waiter
        finally:
            line.remove(waiter)
            if waiter.event.is_set() and line:  # pass an unused wake-up on
                line[0].event.set()
            if not line:
                del self._queues[conversation_id]

    @staticmethod
    async def sleep(waiter: Waiter, seconds: float) -> None:
        """Sleep until woken or ``seconds`` have passed."""
        with anyio.move_on_after(seconds):
            await waiter.event.wait()
        if waiter.event.is_set():
            waiter.event = anyio.Event()

    async def sleep_until_ended(self, turn_id: str, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._ended.setdefault(turn_id, anyio.Event()).wait()

    def turn_ended(self, conversation_id: str, turn_id: str) -> None:
        line = self._queues.get(conversation_id)
        if line:
            line[0].event.set()
        ended = self._ended.pop(turn_id, None)
        if ended is not None:
            ended.set()
