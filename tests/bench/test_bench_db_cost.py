"""benchmarks.db_cost: backend CPU per step of turnstore_apply, on the schema as shipped and
on copies without one of its checks."""

from __future__ import annotations

import asyncpg
import pytest

from benchmarks.db_cost import VARIANTS, measure
from benchmarks.dbtarget import parse_db_url


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_each_variant_applies_and_runs_its_turns(pg_url: str, variant: str) -> None:
    # A variant names constraints and triggers of the current schema: a rename fails here.
    # Each round checks that every claim was granted and every step written.
    us_per_step = await measure(pg_url, VARIANTS[variant], turns=3, batch=2)
    assert us_per_step >= 0.0
    conn = await asyncpg.connect(parse_db_url(pg_url).asyncpg_dsn)
    try:
        left = await conn.fetch(
            "SELECT schema_name FROM information_schema.schemata"
            " WHERE schema_name LIKE 'db\\_cost\\_%'"
        )
    finally:
        await conn.close()
    assert left == []
