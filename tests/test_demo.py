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


async def test_a_second_run_on_the_same_database_reports_its_own_counts(target: Target) -> None:
    """Each run's conversations and keys are its own: a second run on a database that holds
    the first is not a run of duplicates, and its counts are not cumulative."""
    options = {"schema": target.schema, "workers": 4, "conversations": 3, "turns": 20}
    with anyio.fail_after(120):
        first, _, _ = await run_demo(target.url, **options)  # type: ignore[arg-type]
        second, violations, _ = await run_demo(target.url, **options)  # type: ignore[arg-type]
    assert violations == {}
    # the same seed: the same plan of submits and double submits, each double one refusal
    assert second.turns_started == first.turns_started
    assert second.duplicates_refused == first.duplicates_refused
