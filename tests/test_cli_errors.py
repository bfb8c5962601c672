"""Mistakes on the command line answer in one line, exit 2, with no traceback, and a
read-only command creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.soak.pgserver import free_port

from .conftest import PG_URL, Target, on_postgres

ROOT = Path(__file__).parents[1]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "store", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or ROOT,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("command", ["check", "migrate"])
def test_a_wrong_url_scheme(command: str) -> None:
    assert_one_line_error(run(command, "--db", "mysql://u@h/db"), "unsupported database URL")


@pytest.mark.parametrize("command", ["check", "migrate", "demo"])
def test_an_unreachable_port(command: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    assert_one_line_error(run(command, "--db", url), "cannot reach the database")


def test_a_host_that_does_not_resolve() -> None:
    assert_one_line_error(
        run("check", "--db", "postgresql://postgres@nohost.invalid/test"), "cannot reach"
    )


def test_a_database_that_does_not_exist(request: pytest.FixtureRequest) -> None:
    on_postgres(request)
    base = PG_URL.rsplit("/", 1)[0]
    assert_one_line_error(
        run("check", "--db", f"{base}/no_such_database_here"), "does not exist", "createdb"
    )


def test_a_schema_never_migrated(pg_target: Target) -> None:
    assert pg_target.schema is not None
    done = run("check", "--db", pg_target.url, "--schema", pg_target.schema)
    assert_one_line_error(done, "no turnstore schema", "migrate")


def test_check_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    done = run("check", "--db", "sqlite+aiosqlite:///./nodir/x.db", cwd=tmp_path)
    assert_one_line_error(done, "no SQLite database", "nodir/x.db")
    assert not (tmp_path / "nodir").exists()


def test_the_urls_users_paste_mean_the_async_drivers(tmp_path: Path, pg_target: Target) -> None:
    sqlite = f"sqlite:///{tmp_path / 'x.db'}"
    assert run("migrate", "--db", sqlite).returncode == 0
    assert run("check", "--db", sqlite).returncode == 0
    assert pg_target.schema is not None
    plain = pg_target.url.replace("postgresql+asyncpg://", "postgresql://")
    for url in (plain, plain.replace("postgresql://", "postgres://")):
        assert run("migrate", "--db", url, "--schema", pg_target.schema).returncode == 0, url
        assert run("check", "--db", url, "--schema", pg_target.schema).returncode == 0, url


def test_help_lists_every_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("migrate", "check", "demo", "soak", "replay", "bench"):
        assert command in done.stdout
    assert "usage: python -m store" in done.stdout


def test_the_console_script_says_its_own_name() -> None:
    script = Path(sys.executable).with_name("turnstore")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith("usage: turnstore")


def test_bench_outside_a_clone_says_how_to_get_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "store", "bench"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=60,
    )
    if done.returncode != 2:  # the editable install may put the clone on the path
        pytest.fail(f"bench outside a clone: {done.returncode} {done.stderr}")
    assert_one_line_error(done, "clone")


def test_replay_into_a_closed_pipe_ends_quietly() -> None:
    fixture = ROOT / "tests" / "replay" / "data" / "instatic-bricked-conversation.json"
    producer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "store",
            "replay",
            "--provider",
            "anthropic",
            "--input",
            str(fixture),
            "--format",
            "instatic",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert producer.stdout is not None and producer.stderr is not None
    producer.stdout.readline()  # like `| head -1`
    producer.stdout.close()
    err = producer.stderr.read().decode()
    assert producer.wait(timeout=60) == 0
    assert "BrokenPipeError" not in err and "Traceback" not in err
