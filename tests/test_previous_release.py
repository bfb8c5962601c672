"""The previous release's write path runs against the current schema (expand/contract:
migrating before a rolling deploy must not break the processes still running the code of
the release before).

The previous release is the library as of the commit before the newest migration was
added (``git archive`` of its ``store/`` and ``schema/`` into a temporary directory), run
in a subprocess with that directory first on PYTHONPATH, on a database migrated by this
code as far as that release is promised: every migration but the contract ones that no
longer serve it (``code from K`` with K newer than the previous release's version, which
a deploy applies only once its processes are gone: docs/operations.md). It
double-submits (with a key, and without), commits steps, ends its turns; this code then
reads it all back, finds pairing and idempotency held, and continues the conversation.
The test needs the repository's git history: run from a tarball, it fails saying so (it
never skips)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import anyio
import pytest

from store import hooks, sql
from store.checker import check
from store.store import make_backend

from .conftest import Target

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    git = shutil.which("git")
    if git is None:
        pytest.fail("tests/test_previous_release.py needs git to read the previous release")
    done = subprocess.run(
        [git, "-C", str(REPO), *args], capture_output=True, check=False, timeout=60
    )
    if done.returncode != 0:
        pytest.fail(
            f"`git {' '.join(args)}` failed ({done.stderr.decode().strip()}): this test reads "
            "the previous release from the repository's history; run it in a git clone with "
            "full history (`git fetch --unshallow`), not from a tarball",
            pytrace=False,
        )
    return done.stdout.decode()


def previous_release() -> str:
    """The commit before the one that added the newest migration (HEAD while that
    migration is not committed yet)."""
    newest = sql.migrations("postgres")[-1]
    path = f"schema/postgres/{newest.version:04d}_{newest.name}.sql"
    added = _git("log", "--diff-filter=A", "--format=%H", "--", path).split()
    if not added:
        return _git("rev-parse", "HEAD").strip()
    return _git("rev-parse", f"{added[-1]}^").strip()


def _unpack(commit: str, into: Path) -> None:
    git = shutil.which("git")
    assert git is not None
    archive = subprocess.run(
        [git, "-C", str(REPO), "archive", "--format=tar", commit, "store", "schema"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def previous_version(commit: str) -> int:
    """The previous release's version: its newest migration."""
    files = _git("ls-tree", "--name-only", f"{commit}:schema/postgres").split()
    return max(int(f[:4]) for f in files if f[:4].isdigit())


def promised(dialect: str, previous: int) -> tuple[sql.Migration, ...]:
    """This code's migrations that a database still serving code of version ``previous``
    has: all but the contract ones whose code floor is newer than it."""
    return tuple(
        m
        for m in sql.migrations(dialect)
        if not (m.kind == "contract" and (m.code_from or 0) > previous)
    )


def test_the_previous_release_is_older_code() -> None:
    assert previous_version(previous_release()) < sql.code_version("postgres")


def test_the_promised_schema_is_what_this_code_needs_at_least() -> None:
    previous = previous_version(previous_release())
    for dialect in ("sqlite", "postgres"):
        versions = [m.version for m in promised(dialect, previous)]
        assert max(versions) >= sql.needed_version(dialect)


async def test_the_previous_release_writes_against_the_current_schema(
    target: Target, tmp_path: Path
) -> None:
    old = tmp_path / "previous"
    commit = previous_release()
    _unpack(commit, old)
    backend = make_backend(target.url, schema=target.schema)
    try:
        await backend.migrate(known=promised(backend.dialect, previous_version(commit)))
    finally:
        await backend.close()

    # run as a script, not with -m from the repository: sys.path[0] is then tests/, and
    # the previous release's directory comes before the installed (current) package
    worker = Path(__file__).with_name("previous_release_worker.py")
    env = {**os.environ, "PYTHONPATH": str(old)}
    with anyio.fail_after(180):
        done = await anyio.run_process(
            [sys.executable, str(worker), target.url, target.schema or "-"],
            env=env,
            cwd=old,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert Path(report["store"]).is_relative_to(old)  # the previous release's code ran

    # idempotency: one turn per submit, the duplicates are that turn
    assert sorted(report["duplicates"][:2]) == [False, True]
    assert report["duplicates"][2] is True
    assert len(set(report["ids"])) == 1
    assert report["keyless"][0] == report["keyless"][1]
    assert sorted(report["keyless"][2:]) == [False, True]

    store = await target.open(migrate=False)
    try:
        history = await store.history("prev-conv")
        assert [(m.role, m.tool_call_id) for m in history] == [
            ("user", None),
            ("assistant", None),
            ("tool", "call_train"),
            ("assistant", None),
            ("user", None),
            ("assistant", None),
            ("tool", "call_hotel"),
        ]
        assert (await check(hooks.backend(store))).ok  # pairing, density, one running turn
        _, repairs = await store.replay("prev-conv", "anthropic")
        assert repairs == []
        assert (await store.turn_status(report["ids"][0])).status == "finished"
        assert (await store.turn_status(report["keyless"][0])).status == "failed"
        # this code continues where the previous release left off
        again = await store.begin_turn(
            "prev-conv", "Plan the trip", idempotency_key="prev-submit-1"
        )
        assert again.duplicate and again.id == report["ids"][0]
        turn = await store.begin_turn("prev-conv", "Thanks", idempotency_key="prev-submit-2")
        await turn.finish("You're welcome.")
        assert [m.text for m in await store.history("prev-conv", last=2)] == [
            "Thanks",
            "You're welcome.",
        ]
    finally:
        await store.close()
