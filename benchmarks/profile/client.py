"""``client-cost``: the store's own Python cost per turn, with the database taken out.

It opens a real store (PostgreSQL, for its schema and its write path), then replaces the
function that sends a batch of writes with one that answers every write at once, as the
database would have (a claim is claimed, a step or an end is written). W workers then run
turns of the load benchmark's workload (``benchmarks.workload``: a user message, S steps
of K calls with its HTML payloads, the end in the last step) through the public API:
validation, encoding, group commit, the turn's bookkeeping and wake-ups all run; no byte
goes to the server. It reports the CPU time of this process per turn and per step, less
the cost of generating the workload itself (measured on its own first): what turnstore
adds on the client side.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel

from store import AssistantMessage, StoreConfig, ToolResult, hooks
from store.backends.records import ClaimRequest

from ..adapters.store_adapter import _message, _results
from ..workload import PayloadPool, StepPlan, TurnFactory, WorkloadParams
from .fixtures import postgres, scratch_store


class _Answers:
    """What ``turnstore_apply`` would answer, without asking it."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    async def __call__(self, writes: Sequence[Any]) -> list[tuple[Any, ...]]:
        await anyio.lowlevel.checkpoint()  # a round trip suspends the leader
        answers: list[tuple[Any, ...]] = []
        for ord_, w in enumerate(writes, start=1):
            if isinstance(w, ClaimRequest):
                position = self._next.get(w.conversation_id, 0)
                self._next[w.conversation_id] = position + 1
                answers.append((ord_, "claimed", w.turn_id, "running", 1, position + 1))
            else:
                answers.append((ord_, None, None, None, None, None))
        return answers


def _step(plan: StepPlan) -> tuple[AssistantMessage, list[ToolResult]]:
    return _message(plan.assistant_text, plan.calls), _results(plan.results)


async def measure(url: str, turns: int, workers: int) -> dict[str, float]:
    """``{"turns", "us_per_turn", "us_per_step"}``: the client's CPU, generation excluded."""
    postgres(url, "client-cost")
    params = WorkloadParams()
    factory = TurnFactory(params, PayloadPool(params.seed))
    per_worker = max(1, turns // workers)
    config = StoreConfig(busy_timeout=300, lease_seconds=60)
    async with scratch_store(url, "client_cost", config=config) as (store, _schema):
        hooks.group_commit(store).intercept(lambda _apply: _Answers())

        def workload(rng: random.Random) -> list[Any]:
            return [factory.user_text(rng)] + [
                _step(factory.step(rng, s)) for s in range(params.steps)
            ]

        started = time.process_time()
        for w in range(workers):
            rng = random.Random(w)
            for _ in range(per_worker):
                workload(rng)
        generating = time.process_time() - started

        async def worker(w: int) -> None:
            rng = random.Random(w)
            for n in range(per_worker):
                text, *steps = workload(rng)
                turn = await store.begin_turn(f"c{w}_{n}", text, idempotency_key=f"k{w}_{n}")
                for message, results in steps[:-1]:
                    await turn.commit_step(message, results)
                await turn.finish(*steps[-1])

        started = time.process_time()
        async with anyio.create_task_group() as tg:
            for w in range(workers):
                tg.start_soon(worker, w)
        total = time.process_time() - started
    n = per_worker * workers
    per_turn = (total - generating) / n * 1e6
    return {"turns": n, "us_per_turn": per_turn, "us_per_step": per_turn / params.steps}


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--turns", type=int, default=3200)
    p.add_argument("--workers", type=int, default=32)


async def run(args: argparse.Namespace) -> list[str]:
    r = await measure(args.db, args.turns, args.workers)
    return [
        f"{r['turns']:.0f} turns: turnstore's client side costs {r['us_per_turn']:.0f} µs of "
        f"CPU a turn, {r['us_per_step']:.0f} µs a step (the workload's own generation excluded)"
    ]
