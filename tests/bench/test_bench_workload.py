"""The workload model and URL handling: seeded, realistic and well-formed."""

from __future__ import annotations

import random
import re

import pytest

from benchmarks.dbtarget import parse_db_url, schema_name
from benchmarks.workload import PayloadPool, TurnFactory, WorkloadParams, preload_turns


def test_payloads_are_seeded_html_of_realistic_sizes() -> None:
    a, b, c = PayloadPool(1), PayloadPool(1), PayloadPool(2)
    assert a.snippets == b.snippets and a.snippets != c.snippets
    sizes = sorted(len(s) for s in a.snippets)
    assert sizes[0] >= 280 and 4000 <= sizes[-1] <= 4400
    assert 600 < sizes[len(sizes) // 2] < 2500
    assert all(re.fullmatch(r"<(\w+) .*</\1>", s, re.S) for s in a.snippets)


def test_steps_have_k_parallel_calls_with_unique_ids_and_results() -> None:
    params = WorkloadParams(tool_calls=4, think_ms=10)
    factory = TurnFactory(params, PayloadPool(1))
    rng = random.Random(5)
    steps = [factory.step(rng, i) for i in range(50)]
    ids = [c.id for s in steps for c in s.calls]
    assert len(ids) == len(set(ids)) == 200
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)
    for s in steps:
        assert [r.call_id for r in s.results] == [c.id for c in s.calls]
        assert s.token in s.assistant_text
        assert all(0.005 <= t <= 0.015 for t in s.tool_seconds)
    assert factory.step(random.Random(5), 0) == steps[0]  # seeded


def test_preload_writes_about_n_messages() -> None:
    params = WorkloadParams(conversations=4, steps=2, tool_calls=3, preload=1000)
    turns = list(preload_turns(params))
    messages = sum(1 + sum(1 + len(results) for _, _, results in t.steps) for t in turns)
    assert 1000 <= messages < 1000 + 9
    assert {t.conversation_id for t in turns} == {f"conv-{i:05d}" for i in range(4)}
    assert len({t.user_text for t in turns}) == len(turns)


@pytest.mark.parametrize(
    ("url", "backend", "dsn"),
    [
        ("postgresql+asyncpg://u@h:5432/db", "postgres", "postgresql://u@h:5432/db"),
        (
            "postgres://u:p@h/db?sslmode=disable",
            "postgres",
            "postgresql://u:p@h/db?sslmode=disable",
        ),
        ("postgresql://u@h/db", "postgres", "postgresql://u@h/db"),
    ],
)
def test_postgres_urls(url: str, backend: str, dsn: str) -> None:
    t = parse_db_url(url)
    assert (t.backend, t.asyncpg_dsn) == (backend, dsn)
    assert t.sqlalchemy_url("bench_x_1") == "postgresql+asyncpg" + dsn.removeprefix("postgresql")


def test_sqlite_urls_give_each_system_its_own_file() -> None:
    t = parse_db_url("sqlite+aiosqlite:////tmp/x/bench.db")
    assert str(t.sqlite_file("bench_raw_1")) == "/tmp/x/bench.bench_raw_1.db"
    assert t.sqlalchemy_url("bench_raw_1") == "sqlite+aiosqlite:////tmp/x/bench.bench_raw_1.db"


def test_schema_names_are_plain_and_never_public() -> None:
    assert schema_name("raw-locked", "4242") == "bench_raw_locked_4242"
    with pytest.raises(ValueError):
        schema_name("x; drop", "1'")
