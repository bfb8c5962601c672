"""The README's first command: the demo runs and finds no violation."""

from __future__ import annotations

import anyio

from store.demo import run_demo

from .conftest import Target


async def test_the_demo_runs_clean(target: Target) -> None:
    with anyio.fail_after(120):
        stats, violations, _ = await run_demo(
            target.url, schema=target.schema, workers=6, conversations=4, turns=40
        )
    assert violations == {}
    assert stats.turns_started > 0 and stats.steps > stats.turns_started
    assert stats.duplicates_refused > 0
    assert stats.interrupted > 0 and stats.interrupted_calls > 0
