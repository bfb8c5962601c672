"""The Runner-level scenario (``python -m benchmarks.agents_runner``): a short run on each
backend. With the turn wrapper, TurnstoreSession stores every question once, never
interleaves runs and leaves no orphan; every system's history stays paired (each write of
a step is whole); the namespaces are removed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from benchmarks.agents_runner import Params, _run_system
from benchmarks.dbtarget import parse_db_url

SchemaLister = Callable[[str], Awaitable[list[str]]]
LOAD = Params(workers=6, sessions=2, double_submit=0.4, cancel=0.2, think_ms=1, duration=1.0)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_the_runner_scenario_judges_every_system(
    backend: str, pg_url: str, sqlite_url: str, leftover_schemas: SchemaLister
) -> None:
    from agents import set_tracing_disabled

    set_tracing_disabled(True)
    target = parse_db_url(pg_url if backend == "postgres" else sqlite_url)
    results = {s: await _run_system(s, target, LOAD) for s in ("sqlalchemy", "turnstore")}
    for result in results.values():
        assert result.runs_completed > 0 and result.stored_responses > 0
        assert result.orphan_outputs == result.unanswered_calls == 0
        assert not result.errors
    wrapped = results["turnstore"]
    assert wrapped.duplicate_inputs == wrapped.interleaved_runs == 0
    assert wrapped.duplicates_awaited > 0  # the double submits met the idempotency key
    assert wrapped.runs_completed <= wrapped.runs_stored <= wrapped.runs_started
    if backend == "postgres":
        assert await leftover_schemas("agents_runner") == []
