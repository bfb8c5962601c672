"""``replay`` on the command line: run_replay(argv) -> exit status."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from store.replay import PROVIDERS
from store.replay.cli import run_replay

from .rules import CHECKERS, pair_counts
from .sources import FIXTURE, make_table

ORPHANS = {"call_37ac", "call_dc2b", "call_a9df"}
FILE_ARGS = ["--input", str(FIXTURE), "--format", "instatic"]


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_replay(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def body_of(output: str) -> dict[str, Any]:
    body = json.loads(output)
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_fixture_prints_an_accepted_body_with_its_repairs(provider: str) -> None:
    code, out, err = run(["--provider", provider, *FILE_ARGS])
    assert (code, err) == (0, "")
    body = body_of(out)
    repairs = body.pop("repairs")
    assert CHECKERS[provider](body) == []
    assert pair_counts(provider, body) == (32, 32)
    assert {r["call_id"] for r in repairs if r["kind"] == "orphan_result"} == ORPHANS
    assert {"kind", "position", "call_id", "detail"} == set(repairs[0])
    assert [r["position"] for r in repairs if r["kind"] == "duplicate_user"] == [89]


def test_unanswered_drop_option_is_passed_through(tmp_path: Path) -> None:
    dump = {"rows": json.loads(FIXTURE.read_text())["rows"][:3]}  # ends on an open call
    path = tmp_path / "open.json"
    path.write_text(json.dumps(dump))
    args = ["--provider", "anthropic", "--input", str(path), "--format", "instatic"]
    closed = body_of(run(args)[1])
    dropped = body_of(run([*args, "--unanswered", "drop"])[1])
    assert [r["kind"] for r in closed["repairs"]] == ["grouped_rows", "closed_unanswered_call"]
    assert [r["kind"] for r in dropped["repairs"]] == ["grouped_rows", "dropped_unanswered_call"]
    assert pair_counts("anthropic", closed) == (1, 1)
    assert pair_counts("anthropic", dropped) == (0, 0)


def test_database_source(tmp_path: Path) -> None:
    path = tmp_path / "instatic.db"
    make_table(path)
    url = f"sqlite+aiosqlite:///{path}"
    instatic = ["--format", "instatic"]
    code, out, err = run(
        ["--provider", "gemini", "--db", url, "--conversation", "conv_site_01", *instatic]
    )
    assert (code, err) == (0, "")
    body = body_of(out)
    body.pop("repairs")
    assert CHECKERS["gemini"](body) == []
    code, out, err = run(
        ["--provider", "gemini", "--db", url, "--conversation", "nobody", *instatic]
    )
    assert (code, out) == (2, "")
    assert "no rows for conversation 'nobody'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--provider", "gemini", "--input", "/nonexistent/x.json", "--format", "instatic"],
            "cannot read",
        ),
        (["--provider", "gemini", "--input", str(FIXTURE), "--format", "csv"], "--format"),
        (["--provider", "gemini", "--input", str(FIXTURE)], "--format"),
        (["--provider", "mistral", *FILE_ARGS], "unknown provider"),
        (["--provider", "gemini", *FILE_ARGS, "--unanswered", "keep"], "--unanswered"),
        (["--provider", "gemini", "--db", "sqlite+aiosqlite:///x.db"], "--conversation"),
        (["--provider", "gemini"], "one of the arguments --input --db is required"),
        (["--provider", "gemini", "--db", "nonsense://", "--conversation", "c"], "replay: error"),
        (
            ["--provider", "gemini", "--db", "sqlite:///x.db", "--conversation", "c"],
            "replay: error",
        ),
    ],
)
def test_bad_arguments_and_unreadable_input_exit_2_with_one_line(
    argv: list[str], message: str
) -> None:
    code, out, err = run(argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.startswith("replay: error: ") and err.count("\n") == 1


def test_invalid_json_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"rows": [')
    code, _, err = run(["--provider", "openai-chat", "--input", str(path), "--format", "instatic"])
    assert code == 2 and "is not JSON" in err
