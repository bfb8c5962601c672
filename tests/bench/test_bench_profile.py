"""``python -m benchmarks.profile``: each probe run small, through the command line; the
shape of what it prints, never its figures; no scratch schema or file left behind."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from benchmarks.profile import PROBES, main
from benchmarks.profile.apply import VARIANTS
from benchmarks.profile.fixtures import html, step
from benchmarks.profile.statements import TABLES
from store.cli import main as store_main
from store.replay import PROVIDERS

Leftovers = Callable[[str], Awaitable[list[str]]]
NUMBER = r"\d+(\.\d+)?"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


def test_db_cost_runs_every_variant(
    pg_url: str, capsys: pytest.CaptureFixture[str], leftover_schemas: Leftovers
) -> None:
    # A variant names constraints and triggers of the current schema: a rename fails here.
    # Each round checks that every claim was granted and every step written.
    out = run(capsys, "db-cost", "--db", pg_url, "--turns", "2", "--batch", "2", "--repeat", "2")
    assert out[0] == "backend CPU per step, batches of 2 writes (2 runs each):"
    assert len(out) == 1 + len(VARIANTS)
    for line, name in zip(out[1:], VARIANTS, strict=True):
        pattern = rf"  {name} +\d+ µs \(\d+, \d+\); {NUMBER}x as shipped \(median of the rounds\)"
        assert re.fullmatch(pattern, line), line
    assert out[1].endswith("1.00x as shipped (median of the rounds)")
    assert anyio.run(leftover_schemas, "db_cost") == []


def test_statement_cost_times_every_statement(
    pg_url: str, capsys: pytest.CaptureFixture[str], leftover_schemas: Leftovers
) -> None:
    out = run(capsys, "statement-cost", "--db", pg_url, "--loops", "3", "--repeat", "2")
    assert out[0] == "µs in the server, median of 2 runs (the runs in brackets):"
    labels = [f"INSERT of {n}, {name}" for n in (" 1 row", " 4 rows", "30 rows") for name in TABLES]
    labels += ["fences: 8 single-row UPDATEs, per row", "fences: 1 UPDATE of 8 rows, per row"]
    assert [line[:60].strip() for line in out[1:]] == labels
    for line in out[1:]:
        assert re.search(rf" {NUMBER}  \({NUMBER}, {NUMBER}\)$", line), line
    assert anyio.run(leftover_schemas, "statement_cost") == []


def test_client_cost_runs_turns_without_the_database(
    pg_url: str, capsys: pytest.CaptureFixture[str], leftover_schemas: Leftovers
) -> None:
    (line,) = run(capsys, "client-cost", "--db", pg_url, "--turns", "32", "--workers", "4")
    pattern = r"32 turns: turnstore's client side costs -?\d+ µs of CPU a turn, -?\d+ µs a step .*"
    assert re.fullmatch(pattern, line), line
    assert anyio.run(leftover_schemas, "client_cost") == []


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_turn_growth_times_turns_early_and_late(
    backend: str,
    pg_url: str,
    sqlite_url: str,
    capsys: pytest.CaptureFixture[str],
    leftover_schemas: Leftovers,
) -> None:
    # through `python -m store bench profile`, as a user of the package runs it
    url = pg_url if backend == "postgres" else sqlite_url
    argv = ["bench", "profile", "turn-growth", "--db", url, "--turns", "24", "--sample", "6"]
    assert store_main(argv) == 0
    (line,) = capsys.readouterr().out.splitlines()
    pattern = (
        rf"{backend}: a turn's p50 is {NUMBER} ms over turns 7-12 of one conversation, "
        rf"{NUMBER} ms over turns 19-24 \({NUMBER}x\)"
    )
    assert re.fullmatch(pattern, line), line
    if backend == "postgres":
        assert anyio.run(leftover_schemas, "turn_growth") == []
    else:
        folder = Path(sqlite_url.removeprefix("sqlite:///")).parent
        assert not any("turn_growth" in p.name for p in folder.iterdir())


def test_turn_growth_needs_room_for_both_samples(sqlite_url: str) -> None:
    with pytest.raises(SystemExit, match="at least twice"):
        main(["turn-growth", "--db", sqlite_url, "--turns", "10", "--sample", "6"])


def test_replay_speed_times_every_path(
    pg_url: str, capsys: pytest.CaptureFixture[str], leftover_schemas: Leftovers
) -> None:
    out = run(capsys, "replay-speed", "--db", pg_url, "--messages", "30", "--repeat", "2")
    assert out[0] == "36 messages stored in conversation 'long'"  # whole turns of 18
    assert out[1].split() == ["path", "median", "ms", "min", "ms", "max", "ms", "ratio"]
    paths = ["raw", *(f"replay {p}" for p in PROVIDERS), *(f"general {p}" for p in PROVIDERS)]
    assert [line[:28].strip() for line in out[2:]] == paths
    for line in out[2:]:
        assert re.fullmatch(rf"{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}", line[28:].strip()), line
    assert out[2].endswith(" 1.00")
    assert anyio.run(leftover_schemas, "replay_speed") == []


def test_explain_logs_the_plans_inside_turnstore_apply(
    pg_url: str, capsys: pytest.CaptureFixture[str], leftover_schemas: Leftovers
) -> None:
    out = "\n".join(run(capsys, "explain", "--db", pg_url, "--turns", "4"))
    plans = out.split("\n" + "-" * 100)
    texts = [re.search(r"Query Text: (.*)", p) for p in plans if p.strip()]
    assert all(texts) and len(texts) > 10
    statements = [m[1] for m in texts if m]
    # the three calls (claim, step, last step with the end), and statements inside them
    assert statements.count("SELECT * FROM turnstore_apply($1::turnstore_write[])") == 3
    assert any(s.startswith("INSERT INTO turnstore_messages") for s in statements)
    assert anyio.run(leftover_schemas, "explain") == []


@pytest.mark.parametrize("probe", ["db-cost", "statement-cost", "client-cost", "replay-speed",
                                   "explain"])  # fmt: skip
def test_postgresql_probes_refuse_sqlite(probe: str, sqlite_url: str) -> None:
    with pytest.raises(SystemExit, match="measures PostgreSQL"):
        main([probe, "--db", sqlite_url])


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-probe"]) == 2
    assert main(["turn-growth", "--db", "mysql://x"]) == 2
    assert "unsupported database URL" in capsys.readouterr().err
    assert main(["-h"]) == 0
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in PROBES)


def test_the_probes_share_one_step_builder() -> None:
    assert 340 <= len(html()) <= 360 and 660 <= len(html(680)) <= 680
    message, results = step("t1", payload=html(100))
    assert [c.id for c in message.tool_calls] == ["t1_0", "t1_1", "t1_2"]
    assert [r.call_id for r in results] == ["t1_0", "t1_1", "t1_2"]
