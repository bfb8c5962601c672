"""The naive design leaves orphans and duplicate prompts under a double submit racing an
interruption. The interleaving is forced (no timing), so the outcome is exact, on both
backends."""

from __future__ import annotations

import os
from collections.abc import Iterable

import anyio
import pytest

from benchmarks.adapters.base import AdapterOptions, PreloadTurn, ToolCall, ToolResult
from benchmarks.adapters.instatic_rows import Row
from benchmarks.adapters.naive import NaiveAdapter
from benchmarks.adapters.naive_logs import EventLog, PgEventLog, SqliteEventLog
from benchmarks.checker import CheckRow, Ledger, check


class HeldLog:
    """An event log that, once the event for ``hold_call`` is committed, holds its writer
    inside that event (where the naive design cannot be cancelled) until released."""

    def __init__(self, inner: EventLog, hold_call: str) -> None:
        self.inner = inner
        self.hold_call = hold_call
        self.holding = anyio.Event()
        self.release = anyio.Event()

    async def setup(self, url: str, schema: str, pool_size: int) -> None:
        await self.inner.setup(url, schema, pool_size)

    async def teardown(self) -> None:
        await self.inner.teardown()

    async def preload(self, turns: Iterable[PreloadTurn]) -> None:
        await self.inner.preload(turns)

    async def read_back(self) -> list[CheckRow]:
        return await self.inner.read_back()

    async def append(self, conversation_id: str, row: Row) -> None:
        await self.inner.append(conversation_id, row)
        if row[0] == "assistant" and row[2] == self.hold_call:
            self.holding.set()
            await self.release.wait()


def step(tag: str) -> tuple[str, list[ToolCall], list[ToolResult]]:
    token = f"step-{tag * 16}"
    calls = [
        ToolCall(f"call_{tag * 20}{i:04d}", "insertHtml", {"html": "<p>x</p>"}) for i in range(3)
    ]
    return f"[{token}] step {tag}", calls, [ToolResult(c.id, c.name, "<p>ok</p>") for c in calls]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_double_submit_with_interruption_leaves_orphans(
    backend: str, pg_url: str, sqlite_url: str
) -> None:
    url = pg_url if backend == "postgres" else sqlite_url
    text_a, calls_a, results_a = step("a")
    text_b, calls_b, results_b = step("b")
    log = HeldLog(PgEventLog() if backend == "postgres" else SqliteEventLog(), calls_a[0].id)
    naive = NaiveAdapter(AdapterOptions(backend, 4), log)  # type: ignore[arg-type]
    await naive.setup(url, f"bench_naive_orphans_{os.getpid()}")
    try:
        prompt = "Build a single-page website for a climbing gym"
        turns = []

        async def submit() -> None:
            turns.append(await naive.begin_turn("conv", prompt, None))

        async with anyio.create_task_group() as tg:  # the double submit: no key, twice at once
            tg.start_soon(submit)
            tg.start_soon(submit)
        a, b = turns
        stop_a = anyio.CancelScope()

        async def run_a() -> None:
            try:
                with stop_a:
                    await naive.step_started(a, text_a, calls_a)
                    for r in results_a:
                        await naive.tool_finished(a, r)
                    await naive.commit_step(a, text_a, calls_a, results_a)
            finally:
                with anyio.CancelScope(shield=True):
                    await naive.interrupt_turn(a, None)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_a)
            await log.holding.wait()  # A stored its text and first call, and is mid-step
            # the other copy of the turn runs its whole step meanwhile
            await naive.step_started(b, text_b, calls_b)
            for r in results_b:
                await naive.tool_finished(b, r)
            await naive.commit_step(b, text_b, calls_b, results_b)
            await naive.finish_turn(b)
            stop_a.cancel()  # the user presses stop on A
            log.release.set()

        rows = await naive.read_back()
        assert stop_a.cancelled_caught
        violations = check(rows, Ledger([("conv", "step-" + "b" * 16)]))
        # A's abort wrote "interrupted" results for its three pending calls: calls 2 and 3 were
        # never stored (orphans). Call 1 was, and B's rows merged into its assistant run, so
        # its result still pairs. The prompt is stored twice.
        assert {k: v for k, v in violations.items() if v} == {
            "orphan_results": 2,
            "duplicate_user_messages": 1,
        }
        assert [r.role for r in rows] == ["user", "user", "assistant", "assistant"] + [
            "assistant"
        ] * 4 + ["tool"] * 3 + ["tool"] * 3
    finally:
        await naive.teardown()
