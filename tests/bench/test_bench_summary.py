"""``python -m benchmarks.summary``: the Markdown table of one run, and ``--ratios`` over
several runs of one load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import summary, table
from benchmarks.report import results_table

PARAMS = {"backend": "postgres", "workers": 32, "conversations": 64, "steps": 2,
          "tool_calls": 3, "double_submit": 0.2, "interrupt": 0.1, "think_ms": 0.0,
          "preload": 0, "duration": 20.0}  # fmt: skip


def _run(path: Path, steps: dict[str, float], unique: dict[str, float], **params: Any) -> Path:
    """A run's JSON with these steps/s (and unique steps/s) per system."""
    entry = {"turns_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "p99_lock_wait_ms": 0.0,
             "peak_rss_mb": 50.0, "violations": {}, "ratio_to_raw": 0.0}  # fmt: skip
    data = {
        "params": {**PARAMS, **params},
        "machine": {},
        "systems": {n: {**entry, "steps_per_s": r} for n, r in steps.items()},
        "unique_steps": {n: {"steps_per_s": r, "ratio_to_raw": 0.0} for n, r in unique.items()},
    }
    path.write_text(json.dumps(data))
    return path


def test_ratios_give_each_run_the_median_and_the_range(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path / "a.json", {"raw": 3000, "store": 1920}, {"raw": 2500, "store": 1925}),
        _run(tmp_path / "b.json", {"store": 2200, "raw": 2500}, {"raw": 2000, "store": 2100}),
        _run(
            tmp_path / "c.json",
            {"raw": 3000, "store": 1800, "naive": 600},
            {"raw": 2500, "store": 1800},
        ),
    ]
    lines = summary.ratios(runs).splitlines()
    assert lines[0] == "| × raw | a | b | c | median | range | unique: median | range |"
    store = next(line for line in lines if line.startswith("| store "))
    assert store == "| store | 0.64 | 0.88 | 0.60 | 0.64 | 0.60–0.88 | 0.77 | 0.72–1.05 |"
    naive = next(line for line in lines if line.startswith("| naive "))
    assert naive == "| naive | - | - | 0.20 | 0.20 | 0.20–0.20 | - | - |"


def test_ratios_refuse_runs_of_different_loads(tmp_path: Path) -> None:
    a = _run(tmp_path / "a.json", {"raw": 1.0}, {})
    b = _run(tmp_path / "b.json", {"raw": 1.0}, {}, conversations=1)
    with pytest.raises(ValueError, match="not of the same load"):
        summary.ratios([a, b])
    c = _run(tmp_path / "c.json", {"store": 1.0}, {})
    with pytest.raises(ValueError, match="no raw in it"):
        summary.ratios([c])


def test_main_prints_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(tmp_path / "a.json", {"raw": 10.0, "store": 5.0}, {"raw": 10.0, "store": 6.0})
    assert summary.main(["--ratios", str(a)]) == 0
    assert "| store | 0.50 | 0.50 | 0.50–0.50 | 0.60 | 0.60–0.60 |" in capsys.readouterr().out


def test_ratios_to_another_base(tmp_path: Path) -> None:
    a = _run(tmp_path / "a.json", {"raw": 1000.0, "raw-locked": 500.0, "store": 600.0},
             {"raw": 800.0, "raw-locked": 500.0, "store": 750.0})  # fmt: skip
    lines = summary.ratios([a], base="raw-locked").splitlines()
    assert lines[0].startswith("| × raw-locked | a |")
    assert "| store | 1.20 | 1.20 | 1.20–1.20 | 1.50 | 1.50–1.50 |" in lines
    with pytest.raises(ValueError, match="no agents-sdk in it"):
        summary.ratios([a], base="agents-sdk")


def test_the_results_table_is_one_table_in_markdown_and_on_the_terminal(tmp_path: Path) -> None:
    path = _run(tmp_path / "run.json", {"store": 900.0, "raw": 1000.0, "naive": 300.0},
                {"store": 900.0, "raw": 800.0})  # fmt: skip
    data = json.loads(path.read_text())
    data["systems"]["naive"]["violations"] = {"orphan_results": 3, "lost_steps": 0,
                                              "duplicate_user_messages": 2}  # fmt: skip
    data["systems"]["raw"]["ratio_to_raw"] = 1.0
    data["unique_steps"]["store"]["ratio_to_raw"] = 1.13
    data["unique_steps"]["raw"]["ratio_to_raw"] = 1.0
    data["params"]["lock_wait_unmeasured"] = ["store"]
    path.write_text(json.dumps(data))
    lines = summary.table(path).splitlines()
    assert lines[0].startswith("**run** — postgres, W=32 C=64 S=2 K=3")
    assert lines[2] == "| " + " | ".join(table.COLUMNS) + " |"
    assert lines[4:] == [
        "| store | 900 | 1 | 1.00 | 2.00 | n/a | 50 | 0 | - | 1.13 |",
        "| raw | 1000 | 1 | 1.00 | 2.00 | 0.00 | 50 | 0 | 1.00 | 1.00 |",
        "| naive | 300 | 1 | 1.00 | 2.00 | 0.00 | 50 "
        "| orphan_results 3, duplicate_user_messages 2 | - | - |",
    ]
    rich = results_table("title", data)
    assert [c.header for c in rich.columns] == list(table.COLUMNS)
    cells = [[str(cell) for cell in column.cells] for column in rich.columns]
    assert [list(row) for row in zip(*cells, strict=True)] == table.rows(data)
