"""benchmarks.client_cost: the store's client-side CPU per turn with the database taken out."""

from __future__ import annotations

from benchmarks.client_cost import measure


async def test_client_cost_runs_turns_without_the_database(pg_url: str) -> None:
    r = await measure(pg_url, turns=64, workers=8)
    assert r["turns"] == 64
    assert r["us_per_turn"] > 0 and r["us_per_step"] == r["us_per_turn"] / 2
