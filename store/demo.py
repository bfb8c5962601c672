"""The double-submit demo: concurrent simulated agents with double submits and random
interruptions on one store, then the invariant checker over the result."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
from sqlalchemy.engine import make_url

from .checker import check
from .config import StoreConfig
from .store import Store
from .turn import Turn

DEMO_URL = "sqlite+aiosqlite:///./turnstore-demo.db"


@dataclass
class DemoStats:
    turns_started: int = 0
    duplicates_refused: int = 0
    steps: int = 0
    interrupted: int = 0
    interrupted_calls: int = 0


async def _run_agent(turn: Turn, rng: random.Random, steps: int) -> None:
    """One agent turn: ``steps`` model steps, each with 1-3 parallel tool calls."""
    for s in range(steps):
        async with turn.step() as step:
            step.text(f"step {s}: let me use some tools")
            calls = [f"call_{turn.id[-8:]}_{s}_{k}" for k in range(rng.randint(1, 3))]
            for call_id in calls:
                step.tool_call(call_id, "insertHtml", {"selector": "main", "n": s})
            for call_id in calls:
                await anyio.sleep(rng.uniform(0, 0.004))  # the tool runs
                step.tool_result(call_id, f"<section>{call_id}</section>")
    await turn.finish("done")


async def _submit(
    store: Store,
    conversation_id: str,
    text: str,
    key: str,
    rng: random.Random,
    steps: int,
    interrupt_after: float | None,
    stats: DemoStats,
) -> None:
    """Submit a turn; if ``interrupt_after`` is set, the user presses stop that many
    seconds after the turn started."""
    with anyio.CancelScope() as stop_button:
        async with store.turn(conversation_id, text, idempotency_key=key, timeout=60) as turn:
            if turn.duplicate:
                stats.duplicates_refused += 1
                await turn.wait(timeout=60)
                return
            if interrupt_after is not None:
                stop_button.deadline = anyio.current_time() + interrupt_after
            await _run_agent(turn, rng, steps)


async def run_demo(
    url: str = DEMO_URL,
    *,
    workers: int = 16,
    conversations: int = 24,
    turns: int = 300,
    steps: int = 2,
    double_submit: float = 0.3,
    interrupt: float = 0.15,
    seed: int = 7,
    schema: str | None = None,
) -> tuple[DemoStats, dict[str, int], float]:
    """Run the demo; return its stats, the checker's violation counts and the seconds."""
    rng = random.Random(seed)
    stats = DemoStats()
    started = time.perf_counter()
    # This run's conversations and keys are its own: on a database that holds an earlier
    # run, its submits are not duplicates of that run's, and its counts are its own.
    run = uuid.uuid4().hex[:8]
    plan = [
        (
            f"conv_{run}_{rng.randrange(conversations):03d}",
            i,
            rng.random() < double_submit,
            rng.uniform(0.0, 0.02) if rng.random() < interrupt else None,
        )
        for i in range(turns)
    ]
    queue = iter(plan)
    async with Store.open(url, schema=schema, config=StoreConfig(busy_timeout=60)) as store:

        async def worker(seed_offset: int) -> None:
            local = random.Random(seed + seed_offset)
            for cid, i, double, interrupt_after in queue:
                text = f"prompt {i}: build the next section"
                key = f"req_{run}_{i}"
                async with anyio.create_task_group() as tg:
                    for _ in range(2 if double else 1):
                        tg.start_soon(
                            _submit, store, cid, text, key, local, steps, interrupt_after, stats
                        )

        async with anyio.create_task_group() as tg:
            for w in range(workers):
                tg.start_soon(worker, w)
        report = await check(store._backend)  # the whole database
        async with store._backend.read() as tx:
            mine = [
                t
                for t in await tx.all("check_turns")
                if t.conversation_id.startswith(f"conv_{run}_")
            ]
        stats.turns_started = sum(1 for t in mine if t.status != "refused")
        stats.interrupted = sum(1 for t in mine if t.status == "interrupted")
        for cid in {t.conversation_id for t in mine}:
            for m in await store.history(cid):
                stats.steps += m.role == "assistant"
                stats.interrupted_calls += (
                    m.role == "tool" and m.is_error and "interrupted:" in m.text
                )
    return stats, report.counts(), time.perf_counter() - started


def fresh_sqlite(url: str) -> None:
    """Remove a previous demo's SQLite file (and its WAL) so every run starts clean."""
    database = make_url(url).database
    if database:
        for suffix in ("", "-wal", "-shm"):
            Path(database + suffix).unlink(missing_ok=True)


def main(url: str | None = None, **options: int | float) -> int:
    target = url or DEMO_URL
    if url is None:
        fresh_sqlite(target)
    stats, violations, seconds = anyio.run(lambda: run_demo(target, **options))  # type: ignore[arg-type]
    total = sum(violations.values())
    print(f"turnstore demo on {target}")
    print(f"{'turns run':<28}{stats.turns_started:>8}")
    print(f"{'steps committed':<28}{stats.steps:>8}")
    print(f"{'duplicate submits refused':<28}{stats.duplicates_refused:>8}")
    print(f"{'turns interrupted':<28}{stats.interrupted:>8}")
    print(f"{'calls closed as interrupted':<28}{stats.interrupted_calls:>8}")
    print(f"{'violations':<28}{total:>8}  {violations or ''}")
    print(f"{'seconds':<28}{seconds:>8.1f}")
    return 0 if total == 0 else 1
