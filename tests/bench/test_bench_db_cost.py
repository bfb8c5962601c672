"""benchmarks.db_cost: backend CPU per step of turnstore_apply, on the schema as shipped and
on copies without one of its checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from benchmarks.db_cost import VARIANTS, measure


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_each_variant_applies_and_runs_its_turns(
    pg_url: str, variant: str, leftover_schemas: Callable[[str], Awaitable[list[str]]]
) -> None:
    # A variant names constraints and triggers of the current schema: a rename fails here.
    # Each round checks that every claim was granted and every step written.
    us_per_step = await measure(pg_url, VARIANTS[variant], turns=3, batch=2)
    assert us_per_step >= 0.0
    assert await leftover_schemas("db_cost") == []
