"""The driver: W concurrent anyio workers play the workload against one adapter for
``duration`` seconds, the way an agent runtime would.

Each worker loops: pick a conversation at random (so turns on one conversation can also race
without a double submit), make a user text, and run the turn, or, at the double-submit rate,
run it twice at once (one idempotency key for systems that support keys, none otherwise).

A turn is the user message and S steps. In a step the model answers (think time), its K tools
run in parallel (each with its own duration, results reported in the order they finish), and
the step commits. At the interrupt rate a turn is cancelled through its anyio cancel scope at
a random point inside one random step: the scope's deadline is set at the start of that step
to ``u * D``, ``u`` uniform and ``D`` the step's expected duration (think time, plus the
system's running mean of step-write time), so the cancel lands in the model's think time, the
tools' run time or the system's writes, in proportion to how long each takes. If the step
completes first, the turn is cancelled right after it (counted as "between steps").

At the deadline workers start no new turns; turns in flight finish (so that the ledger stays
exact), and are hard-cancelled ``GRACE_S`` later at most. Rates count what committed before
the deadline.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio
import anyio.lowlevel

from .adapters.base import Adapter, Duplicate, PartialStep, TurnRefused
from .metrics import RunStats
from .workload import PayloadPool, StepPlan, TurnFactory, WorkloadParams

GRACE_S = 30.0
INTERRUPT_HANDLER_TIMEOUT_S = 30.0
TICK_S = 0.25

Tick = Callable[[RunStats, float], None]


class Driver:
    def __init__(
        self,
        adapter: Adapter[object],
        params: WorkloadParams,
        conversations: Sequence[str],
        payloads: PayloadPool,
        on_tick: Tick | None = None,
    ) -> None:
        self.adapter = adapter
        self.params = params
        self.conversations = list(conversations)
        self.factory = TurnFactory(params, payloads)
        self.on_tick = on_tick
        self.stats = RunStats(duration=params.duration)
        self._deadline = math.inf
        self._write_s = 0.005  # running mean of a step's write time (for the cut point)

    async def run(self) -> RunStats:
        start = anyio.current_time()
        self._deadline = start + self.params.duration
        async with anyio.create_task_group() as outer:
            if self.on_tick is not None:
                outer.start_soon(self._ticker, start)
            with anyio.move_on_after(self.params.duration + GRACE_S) as hard:
                async with anyio.create_task_group() as tg:
                    for w in range(self.params.workers):
                        tg.start_soon(self._worker, w)
            outer.cancel_scope.cancel()
        if hard.cancelled_caught:
            self.stats.errors["hard stop after the grace period"] += 1
        return self.stats

    async def _ticker(self, start: float) -> None:
        assert self.on_tick is not None
        while True:
            await anyio.sleep(TICK_S)
            self.on_tick(self.stats, anyio.current_time() - start)

    async def _worker(self, index: int) -> None:
        p = self.params
        rng = random.Random(f"{p.seed}:worker:{index}")
        while anyio.current_time() < self._deadline:
            conv = rng.choice(self.conversations)
            text = self.factory.user_text(rng)
            key = f"req-{rng.getrandbits(64):016x}" if self.adapter.supports_idempotency else None
            if rng.random() < p.double_submit:
                self.stats.double_submits += 1
                pair = [0, 0]  # steps each copy committed in the window
                async with anyio.create_task_group() as tg:
                    for copy in range(2):
                        tg.start_soon(
                            self._turn,
                            random.Random(rng.getrandbits(64)),
                            conv,
                            text,
                            key,
                            (pair, copy),
                        )
                # a system that ran both copies did the steps of the lesser one twice
                self.stats.duplicated_steps_in_window += min(pair)
            else:
                await self._turn(rng, conv, text, key)

    async def _turn(
        self,
        rng: random.Random,
        conv: str,
        text: str,
        key: str | None,
        copy: tuple[list[int], int] | None = None,
    ) -> None:
        """One turn; ``copy``: the tally of a double submit and which of its copies this is."""
        p, st = self.params, self.stats
        cut_step = rng.randrange(p.steps) if p.steps and rng.random() < p.interrupt else -1
        cut_at = rng.random()
        turn = await self._begin(conv, text, key)
        if turn is None:
            return
        where = _Cursor(copy=copy)
        finished = False
        try:
            with anyio.CancelScope() as scope:
                try:
                    ended = False
                    for i in range(p.steps):
                        cut = (scope, cut_at) if i == cut_step else None
                        ended = await self._step(turn, conv, rng, i, where, cut)
                    where.phase = "finish"
                    if not ended:
                        await self.adapter.finish_turn(turn)
                    finished = True
                    st.turns_committed += 1
                    if anyio.current_time() < self._deadline:
                        st.turns_in_window += 1
                except Exception as exc:
                    st.errors[f"{where.phase}: {type(exc).__name__}"] += 1
            if scope.cancelled_caught:
                st.interrupts[where.phase] += 1
        finally:
            if not finished:
                await self._interrupted(turn, where.partial)

    async def _begin(self, conv: str, text: str, key: str | None) -> object | None:
        """The turn handle, or None if there is no turn to run (refused, a duplicate, or an
        error, each counted)."""
        st = self.stats
        asked = anyio.current_time()
        try:
            turn = await self.adapter.begin_turn(conv, text, key)
        except TurnRefused:
            st.busy_refused += 1
            return None
        except Exception as exc:
            st.errors[f"begin_turn: {type(exc).__name__}"] += 1
            return None
        if isinstance(turn, Duplicate):
            st.duplicates_refused += 1
            try:
                await turn.wait()
            except Exception as exc:
                st.errors[f"duplicate wait: {type(exc).__name__}"] += 1
            return None
        st.turns_started += 1
        st.start_ms.append((anyio.current_time() - asked) * 1000.0)
        return turn

    async def _step(
        self,
        turn: object,
        conv: str,
        rng: random.Random,
        index: int,
        where: _Cursor,
        cut: tuple[anyio.CancelScope, float] | None,
    ) -> bool:
        """One step: the model answers, the tools run (in parallel; each result is reported
        as it finishes), the step commits. ``cut``: the turn's scope and where in this step
        to cancel it. True if the step's write also ended the turn (its last step, on a
        system that ``ends_turn_with_last_step``)."""
        a = self.adapter
        plan = self.factory.step(rng, index)
        if cut is not None:
            cut[0].deadline = anyio.current_time() + cut[1] * self._expected_s(plan)
        where.phase = "model"
        await _sleep(self.factory.model_seconds(rng))
        where.partial = PartialStep(plan.assistant_text, plan.calls)
        write_s = await _timed(where, a.step_started(turn, plan.assistant_text, plan.calls))
        ran = 0.0
        by_end = sorted(zip(plan.results, plan.tool_seconds, strict=True), key=_second)
        for i, (result, secs) in enumerate(by_end):
            where.phase = "tools"
            if i == 0 or secs > ran:
                await _sleep(secs - ran)
            ran = secs
            where.partial.results.append(result)
            write_s += await _timed(where, a.tool_finished(turn, result))
        ends = a.ends_turn_with_last_step and index == self.params.steps - 1
        commit = a.finish_with_step if ends else a.commit_step
        write_s += await _timed(where, commit(turn, plan.assistant_text, plan.calls, plan.results))
        where.partial = None
        self._step_committed(conv, plan, write_s, where)
        if ends:  # no point is left between this step and the turn's end to cut at
            if cut is not None and not cut[0].cancel_called:
                cut[0].deadline = math.inf
            return True
        if cut is not None:
            # the cut point fell after the commit (or inside a write the system shields)
            where.phase = "between steps"
            if not cut[0].cancel_called:
                cut[0].deadline = math.inf
                cut[0].cancel()
            await anyio.lowlevel.checkpoint()
        return False

    async def _interrupted(self, turn: object, partial: PartialStep | None) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(INTERRUPT_HANDLER_TIMEOUT_S):
            try:
                await self.adapter.interrupt_turn(turn, partial)
            except Exception as exc:
                self.stats.errors[f"interrupt_turn: {type(exc).__name__}"] += 1

    def _expected_s(self, plan: StepPlan) -> float:
        think = self.params.think_ms / 1000.0
        return think + max(plan.tool_seconds, default=0.0) + self._write_s

    def _step_committed(self, conv: str, plan: StepPlan, write_s: float, where: _Cursor) -> None:
        st = self.stats
        st.steps_committed += 1
        if anyio.current_time() < self._deadline:
            st.steps_in_window += 1
            if where.copy is not None:
                tally, copy = where.copy
                tally[copy] += 1
        st.step_ms.append(write_s * 1000.0)
        st.ledger.committed_steps.append((conv, plan.token))
        self._write_s += (write_s - self._write_s) * 0.05


@dataclass(slots=True)
class _Cursor:
    """Where a turn is, and the step it is in (what the adapter is told if it is cut)."""

    phase: str = "model"
    partial: PartialStep | None = None
    copy: tuple[list[int], int] | None = None  # a double submit's tally, and which copy


async def _timed(where: _Cursor, write: Awaitable[None]) -> float:
    """Run one of the adapter's write calls; its duration in seconds."""
    where.phase = "write"
    t0 = time.perf_counter()
    await write
    return time.perf_counter() - t0


def _second(pair: tuple[object, float]) -> float:
    return pair[1]


async def _sleep(seconds: float) -> None:
    """Think time; with none, still one checkpoint, as the real await would be."""
    if seconds > 0:
        await anyio.sleep(seconds)
    else:
        await anyio.lowlevel.checkpoint()
