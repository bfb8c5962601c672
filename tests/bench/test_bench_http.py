"""The benchmark's HTTP mode: the same storm of double submits and interruptions through
``python -m store serve`` (store-http), checked like the library in process: no violation,
no error, its tables dropped or files removed at the end."""

from __future__ import annotations

import os
from pathlib import Path

from test_bench_smoke import ALLOWED, STORM, SchemaLister, assert_sane

from benchmarks.adapters.store_http import make_store_http
from benchmarks.checker import KINDS
from benchmarks.cli import main
from benchmarks.dbtarget import parse_db_url
from benchmarks.system_run import run_system

ALLOWED.setdefault("store-http", set())  # breaks nothing, like the store in process


async def test_http_mode_on_postgres(pg_url: str, bench_schemas: SchemaLister) -> None:
    run_id = f"w{os.getpid()}"
    r = await run_system("store-http", make_store_http, pg_url, STORM, run_id)
    assert_sane(r, STORM)
    assert r.counts["double submits"] > 0 and sum(r.interrupts.values()) > 0
    assert r.violations == dict.fromkeys(KINDS, 0)
    assert await bench_schemas(run_id) == []


async def test_http_mode_on_sqlite(sqlite_url: str) -> None:
    r = await run_system("store-http", make_store_http, sqlite_url, STORM, "w1")
    assert_sane(r, STORM)
    assert r.violations == dict.fromkeys(KINDS, 0)
    folder = parse_db_url(sqlite_url).sqlite_path
    assert folder is not None
    assert list(Path(folder).parent.iterdir()) == []


def test_http_flag_runs_both_and_prints_the_ratio(sqlite_url: str, capsys: object) -> None:
    code = main(["--db", sqlite_url, "--systems", "store", "--http", "--duration", "1",
                 "--workers", "4", "--conversations", "4", "--in-process"])  # fmt: skip
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert code == 0, out
    assert "store-http" in out and "HTTP service / in process:" in out
