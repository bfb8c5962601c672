"""Group commit: the writes that this process's turns send at the same moment are applied
together, in one transaction and one round trip, instead of one transaction each.

Each write is still decided on its own (its conversation's lock, its fencing token, its
constraints) and gets its own answer; only the transaction and the round trip are shared.
There is no timer and no background task: a writer that finds a free slot applies, at
once, its own write and every write queued behind the running batches (the "leader"); the
others wait for their answers. When the database is idle a batch holds one write and costs
what a lone write costs; under load batches grow by themselves, and the commits, round
trips and socket writes per write fall.

A write may *linger* (``submit(op, linger=seconds)``): it starts no batch of its own but
rides in the next batch that another write starts, or leads one itself once ``linger``
has passed. A claim on a conversation whose running turn lives in this process lingers:
the turn's next write (its step, or its end) comes within moments, and the claim, which
is going to queue behind that turn anyway, joins its batch instead of taking a round trip
and a commit of its own on the conversation's critical path.

Writes that would wait for each other in the database — two writes on one conversation
take its lock — are never in flight at once (``conflict_key``): a write whose key is held
by a running batch stays queued and rides in the next batch that starts after that one
ended. Concurrent batches therefore never block each other on a lock: each slot does
work, and a write that would have waited for the lock waits in the queue instead, where it
joins a batch rather than taking a transaction, a round trip and a WAL flush of its own.

If a batch fails with an error that is not a broken connection (a constraint refused one
write), the batch rolled back as a whole: its writes are applied again one by one, so that
only the write at fault fails and the others land. A broken connection is reported to
every write of the batch: whether the COMMIT landed is unknown, and each write's own retry
recognises an attempt that did land (see ``Backend.retrying``).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

import anyio

from . import telemetry

Op = TypeVar("Op")
Result = TypeVar("Result")

ApplyBatch = Callable[[Sequence[Op]], Awaitable[Sequence[Result]]]


class _Pending(Generic[Op, Result]):
    __slots__ = ("done", "error", "lingering", "op", "result", "wake")

    def __init__(self, op: Op, lingering: bool) -> None:
        self.op = op
        self.lingering = lingering  # rides in another's batch; leads none (yet)
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.wake = anyio.Event()


class GroupCommit(Generic[Op, Result]):
    """Applies writes in batches of up to ``max_batch``, with at most ``max_concurrent``
    batches in flight (each on its own connection).

    ``apply`` runs one batch in one transaction and returns one answer per write, in
    order. ``is_connection_error`` tells a broken connection (not retried one by one) from
    a refusal (retried one by one). Writes with equal ``conflict_key`` (by default, none
    conflict) are never in flight at once; among them the order of submission is kept.
    """

    def __init__(
        self,
        apply: ApplyBatch[Op, Result],
        *,
        is_connection_error: Callable[[BaseException], bool],
        max_concurrent: int = 2,
        max_batch: int = 64,
        conflict_key: Callable[[Op], Hashable] | None = None,
    ) -> None:
        if max_concurrent < 1 or max_batch < 1:
            raise ValueError("max_concurrent and max_batch must be at least 1")
        self._apply = apply
        self._is_connection_error = is_connection_error
        self._max_concurrent = max_concurrent
        self._max_batch = max_batch
        self._conflict_key = conflict_key
        self._queue: deque[_Pending[Op, Result]] = deque()
        self._running = 0
        self._held: Counter[Hashable] = Counter()  # conflict keys of the running batches
        #: batches applied and writes in them, for the curious (and the tests)
        self.batches = 0
        self.writes = 0

    def queued(self) -> int:
        """How many writes wait for a batch (the lingering ones included)."""
        return len(self._queue)

    def lingering(self) -> int:
        """How many writes wait to ride in a batch that another write will start."""
        return sum(1 for p in self._queue if p.lingering)

    def running(self) -> int:
        """How many batches are in flight."""
        return self._running

    def intercept(
        self, wrap: Callable[[ApplyBatch[Op, Result]], ApplyBatch[Op, Result]]
    ) -> ApplyBatch[Op, Result]:
        """A hook for tests and benchmarks (``store.hooks``): from now on each batch is
        applied by what ``wrap`` makes of the current ``apply`` (to hold batches up, or to
        answer without a database). Returns the ``apply`` it replaced, to put back."""
        previous = self._apply
        self._apply = wrap(previous)
        return previous

    async def submit(self, op: Op, *, linger: float = 0.0) -> Result:
        """Apply ``op`` (with whatever else is waiting) and return its answer, or raise its
        error. Runs to the end even if the caller is cancelled: other callers' writes may
        ride in the same batch. With ``linger`` > 0 the write first waits up to that many
        seconds for a batch started by another write, and rides in it."""
        pending: _Pending[Op, Result] = _Pending(op, linger > 0)
        self._queue.append(pending)
        with anyio.CancelScope(shield=True):
            if pending.lingering:
                with anyio.move_on_after(linger):
                    await pending.wake.wait()  # set only when its batch has answered
                pending.lingering = False
            while not pending.done:
                if self._running < self._max_concurrent and self._can_lead():
                    await self._lead()
                else:
                    await pending.wake.wait()
                    pending.wake = anyio.Event()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _can_lead(self) -> bool:
        """Whether a batch could start now: some queued write that does not linger
        conflicts with no running batch."""
        if not self._held:
            return any(not p.lingering for p in self._queue)
        key = self._conflict_key
        assert key is not None
        return any(not p.lingering and key(p.op) not in self._held for p in self._queue)

    def _take_batch(self) -> list[_Pending[Op, Result]]:
        """The oldest queued writes, up to ``max_batch``, that conflict with no running
        batch. A write left behind holds back every later write with its key, so that the
        writes of one key keep their order."""
        key = self._conflict_key
        if key is None:
            count = min(self._max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]
        batch: list[_Pending[Op, Result]] = []
        left: deque[_Pending[Op, Result]] = deque()
        blocked: set[Hashable] = set()
        while self._queue and len(batch) < self._max_batch:
            pending = self._queue.popleft()
            k = key(pending.op)
            if k in self._held or k in blocked:
                blocked.add(k)
                left.append(pending)
            else:
                batch.append(pending)
        left.extend(self._queue)
        self._queue = left
        return batch

    async def _lead(self) -> None:
        """Take a slot and apply the oldest queued writes that may run as one batch."""
        batch = self._take_batch()
        keys = [self._conflict_key(p.op) for p in batch] if self._conflict_key else []
        self._held.update(keys)
        self._running += 1
        try:
            await self._apply_all(batch)
        finally:
            self._running -= 1
            for k in keys:
                self._held[k] -= 1
                if not self._held[k]:
                    del self._held[k]
            # hand the free slot to the oldest writer still waiting (lingering ones wait
            # for a batch to ride in, or for their time to run out)
            for waiting in self._queue:
                if not waiting.lingering:
                    waiting.wake.set()
                    break

    async def _apply_all(self, batch: list[_Pending[Op, Result]]) -> None:
        self.batches += 1
        self.writes += len(batch)
        telemetry.batch_size.record(len(batch))
        try:
            results = await self._apply([p.op for p in batch])
        except Exception as exc:
            if len(batch) == 1 or self._is_connection_error(exc):
                for p in batch:
                    _settle(p, error=exc)
                return
            for p in batch:  # one write was refused: find it, let the others land
                try:
                    (result,) = await self._apply([p.op])
                except Exception as single:
                    _settle(p, error=single)
                else:
                    _settle(p, result=result)
            return
        except BaseException as exc:  # not expected under the shield; never strand a writer
            for p in batch:
                _settle(p, error=exc)
            raise
        for p, result in zip(batch, results, strict=True):
            _settle(p, result=result)


def _settle(
    pending: _Pending[Op, Result],
    *,
    result: Result | None = None,
    error: BaseException | None = None,
) -> None:
    pending.result = result
    pending.error = error
    pending.done = True
    pending.wake.set()
