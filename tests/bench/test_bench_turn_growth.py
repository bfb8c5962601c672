"""benchmarks.turn_growth: a turn's latency early and late in one conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.turn_growth import measure


async def test_it_times_turns_early_and_late_and_cleans_up(sqlite_url: str) -> None:
    r = await measure(sqlite_url, turns=24, sample=6)
    assert r["p50_early_ms"] > 0 and r["p50_late_ms"] > 0
    assert r["ratio"] == r["p50_late_ms"] / r["p50_early_ms"]
    folder = Path(sqlite_url.removeprefix("sqlite:///")).parent
    assert not any("turn_growth" in p.name for p in folder.iterdir())


async def test_it_needs_room_for_both_samples(sqlite_url: str) -> None:
    with pytest.raises(SystemExit, match="at least twice"):
        await measure(sqlite_url, turns=10, sample=6)
