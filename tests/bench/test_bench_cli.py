"""The command line end to end: isolated child processes, the JSON shape, the chart, a new
system registered in one line, a sweep, and bad arguments."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from benchmarks.adapters import ADAPTERS, AdapterOptions, UnsupportedBackend
from benchmarks.adapters.raw_locked import RawLockedPgAdapter
from benchmarks.checker import KINDS
from benchmarks.cli import main

ENTRY_KEYS = {
    "steps_per_s", "turns_per_s", "p50_ms", "p99_ms", "p99_lock_wait_ms",
    "peak_rss_mb", "violations", "ratio_to_raw",
}  # fmt: skip
SMALL = ["-W", "4", "-C", "4", "--duration", "1", "--double-submit", "0.2", "--interrupt", "0.2"]


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_postgres_run_in_child_processes_writes_json_and_chart(
    pg_url: str, tmp_path: Path, bench_schemas: Callable[[str], Awaitable[list[str]]]
) -> None:
    out, chart = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["bench", "--db", pg_url, "--systems", "raw,naive", *SMALL,
               "--json", str(out), "--chart", str(chart)])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {
        "params", "machine", "systems", "cpu_us_per_step", "unique_steps", "turn_start"
    }  # fmt: skip
    for start in data["turn_start"].values():  # every turn starts with a write: > 0
        assert 0 < start["p50_ms"] <= start["p99_ms"]
    assert set(data["unique_steps"]) == {"raw", "naive"}
    assert data["unique_steps"]["raw"]["ratio_to_raw"] == 1.0
    assert list(data["systems"]) == ["raw", "naive"]
    for cpu in data["cpu_us_per_step"].values():  # client and server CPU time, both > 0
        assert set(cpu) == {"process", "database"} and min(cpu.values()) > 0
    for entry in data["systems"].values():
        assert set(entry) == ENTRY_KEYS
        assert set(entry["violations"]) == set(KINDS)
        assert all(isinstance(entry[k], float) for k in ENTRY_KEYS - {"violations"})
        assert entry["steps_per_s"] > 0 and entry["peak_rss_mb"] > 10
    assert data["systems"]["raw"]["ratio_to_raw"] == 1.0
    assert data["systems"]["naive"]["ratio_to_raw"] > 0
    assert data["params"]["workers"] == 4 and data["params"]["backend"] == "postgres"
    (method,) = data["params"]["rss_method"]
    assert method.startswith("peak RSS of a child process that ran only this system")
    assert data["machine"]["database"].startswith("PostgreSQL")
    assert is_png(chart)
    assert anyio.run(bench_schemas, str(os.getpid())) == []


def raw_locked_copy(options: AdapterOptions) -> RawLockedPgAdapter:
    return RawLockedPgAdapter(options)


def test_a_registered_system_runs_in_its_own_process(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ADAPTERS, "copy", raw_locked_copy)  # how `store` gets registered
    out = tmp_path / "r.json"
    assert main(["--db", pg_url, "--systems", "raw,copy", *SMALL, "--json", str(out)]) == 0
    systems = json.loads(out.read_text())["systems"]
    assert systems["copy"]["p99_lock_wait_ms"] > 0  # it really ran raw-locked
    assert systems["copy"]["ratio_to_raw"] > 0


def test_sqlite_sweep_in_process(sqlite_url: str, tmp_path: Path) -> None:
    out, chart = tmp_path / "s.json", tmp_path / "s.png"
    args = ["--db", sqlite_url, "--systems", "raw,naive", "-C", "4", "--duration", "0.3",
            "--sweep", "--in-process", "--json", str(out), "--chart", str(chart)]  # fmt: skip
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert set(data["sweep"]) == {"1", "4", "16", "64"}
    for group in data["sweep"].values():
        assert set(group) == {"raw", "naive"}
        assert group["raw"]["steps_per_s"] > 0
    assert data["params"]["backend"] == "sqlite" and "shared" in data["params"]["rss_method"][0]
    assert is_png(chart)


@pytest.mark.parametrize(
    "args",
    [
        ["--systems", "nope"],
        ["--double-submit", "1.5"],
        ["--workers", "0"],
        ["--db", "mysql://x/y"],
        ["--db", "sqlite:///:memory:"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert "error" in capsys.readouterr().err


def postgres_only(options: AdapterOptions) -> RawLockedPgAdapter:
    if options.backend != "postgres":
        raise UnsupportedBackend("runs on PostgreSQL only")
    return RawLockedPgAdapter(options)


def test_a_system_that_does_not_run_on_the_backend_is_skipped(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ADAPTERS, "pg-only", postgres_only)
    out = tmp_path / "r.json"
    args = ["--db", sqlite_url, "--systems", "raw,pg-only", "--duration", "0.3", "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert list(data["systems"]) == ["raw"]
    assert data["params"]["skipped"] == {"pg-only": "runs on PostgreSQL only"}
