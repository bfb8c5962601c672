"""Run the OpenAI Agents SDK's own session tests against ``TurnstoreSession``.

    python -m tests.agents_sdk.run [--backend sqlite|postgres|both] [--pg-url URL]

The tests come from the sdist of the installed SDK version (``AGENTS_SDIST``: a
``.tar.gz`` or an unpacked folder; else it is fetched once with ``pip download
openai-agents==VERSION --no-deps --no-binary :all:`` into ``~/.cache/turnstore``): its
``tests/memory/test_session.py``, ``tests/memory/test_session_limit.py`` and
``tests/extensions/memory/test_sqlalchemy_session.py``, run by pytest inside the sdist with
``turnstore_sdk_swap`` (beside this file), which swaps the session classes. Prints, per
backend, how many passed, failed and were excluded (with why); exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEST_FILES = (
    "tests/memory/test_session.py",
    "tests/memory/test_session_limit.py",
    "tests/extensions/memory/test_sqlalchemy_session.py",
)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "turnstore"


class SdistUnavailable(RuntimeError):
    pass


def sdk_version() -> str:
    return version("openai-agents")


def sdist_dir() -> Path:
    """The unpacked sdist of the installed SDK version, fetched and unpacked if needed."""
    wanted = sdk_version()
    given = os.environ.get("AGENTS_SDIST")
    archive: Path | None = None
    if given:
        path = Path(given)
        if path.is_dir():
            return path
        archive = path
    folder = CACHE / f"openai_agents-{wanted}"
    if (folder / "tests" / "memory" / "test_session.py").is_file():
        return folder
    if archive is None:
        archive = CACHE / f"openai_agents-{wanted}.tar.gz"
        if not archive.is_file():
            CACHE.mkdir(parents=True, exist_ok=True)
            fetched = subprocess.run(
                [sys.executable, "-m", "pip", "download", f"openai-agents=={wanted}",
                 "--no-deps", "--no-binary", ":all:", "-d", str(CACHE)],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if fetched.returncode != 0 or not archive.is_file():
                why = fetched.stderr.strip()[-300:]
                raise SdistUnavailable(
                    f"could not fetch the openai-agents {wanted} sdist ({why}); download it "
                    f"with `pip download openai-agents=={wanted} --no-deps --no-binary :all:` "
                    "and point AGENTS_SDIST at it"
                )
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch, tarfile.open(archive) as tar:
        tar.extractall(scratch, filter="data")
        (unpacked,) = Path(scratch).iterdir()
        unpacked.rename(folder)
    return folder


@dataclass
class Outcome:
    backend: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    output: str = ""

    @property
    def ran(self) -> int:
        return len(self.passed) + len(self.failed) + len(self.skipped)


def run(backend: str, pg_url: str | None = None, timeout: float = 1200) -> Outcome:
    """Run the SDK's session tests against ``TurnstoreSession`` on ``backend``."""
    root = sdist_dir()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "outcomes.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "TURNSTORE_SDK_BACKEND": backend,
            "TURNSTORE_SDK_REPORT": str(report),
        }
        if pg_url:
            env["TURNSTORE_SDK_PG_URL"] = pg_url
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "turnstore_sdk_swap",
             "-q", "-W", "ignore", *TEST_FILES],
            cwd=root, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if not report.is_file():
            raise RuntimeError(f"the SDK's tests did not run:\n{done.stdout}\n{done.stderr}")
        found = json.loads(report.read_text())
    return Outcome(
        backend,
        found["passed"],
        found["failed"],
        found["skipped"],
        found["excluded"],
        done.stdout[-4000:],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.agents_sdk.run", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("STORE_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(f"openai-agents {sdk_version()}: {', '.join(TEST_FILES)}")
    failed = False
    for backend in backends:
        outcome = run(backend, args.pg_url)
        print(
            f"{backend}: {len(outcome.passed)} passed, {len(outcome.failed)} failed, "
            f"{len(outcome.skipped)} skipped, {len(outcome.excluded)} excluded"
        )
        for nodeid in outcome.failed:
            print(f"  FAILED {nodeid}")
        failed = failed or bool(outcome.failed)
    print("excluded (they inspect the SDK backend's own internals):")
    for nodeid, why in sorted(outcome.excluded.items()):
        print(f"  {nodeid}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
