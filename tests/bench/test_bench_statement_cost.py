"""benchmarks.statement_cost: a statement's set-up on turnstore's tables, against its rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from benchmarks.statement_cost import TABLES, measure


async def test_every_probe_runs_and_leaves_no_schema(
    pg_url: str, leftover_schemas: Callable[[str], Awaitable[list[str]]]
) -> None:
    seen = await measure(pg_url, loops=3, repeat=1)
    rows = (" 1 row", " 4 rows", "30 rows")
    expected = {f"INSERT of {n}, {name}" for n in rows for name in TABLES}
    expected |= {"fences: 8 single-row UPDATEs, per row", "fences: 1 UPDATE of 8 rows, per row"}
    assert set(seen) == expected
    assert all(len(v) == 1 and v[0] > 0 for v in seen.values())
    assert await leftover_schemas("statement_cost") == []
