"""Each system in its own child process, so that its peak RSS (``ru_maxrss``) is its own and
not what an earlier system left behind. The parent sends the job as JSON on the child's stdin;
the child answers with lines starting with ``MARK`` (progress, then a result or an error) on
stdout and lets anything else through to stderr.

Child: ``python -m benchmarks.isolate`` (not meant to be run by hand).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .adapters.base import UnsupportedBackend
from .metrics import peak_rss_mb
from .system_run import Progress, SystemResult
from .workload import WorkloadParams

MARK = "@@bench "
CHILD = "a child process that ran only this system"


class SystemFailed(RuntimeError):
    pass


def run_isolated(
    name: str,
    factory_ref: str,
    url: str,
    params: WorkloadParams,
    run_id: str,
    progress: Progress | None = None,
) -> SystemResult:
    job = {"name": name, "ref": factory_ref, "url": url, "params": asdict(params), "run_id": run_id}
    # the child imports what this process can (the factory was checked importable here)
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, *(p or os.getcwd() for p in sys.path)]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.isolate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    result: SystemResult | None = None
    error = ""
    unsupported = False
    try:
        for line in proc.stdout:
            if not line.startswith(MARK):
                sys.stderr.write(line)
                continue
            msg = json.loads(line[len(MARK) :])
            if "progress" in msg and progress is not None:
                progress(*msg["progress"])
            elif "result" in msg:
                result = SystemResult.from_dict(msg["result"])
            elif "error" in msg:
                error = msg["error"]
                if msg.get("unsupported"):
                    unsupported = True
    finally:
        rc = proc.wait()
    if unsupported:
        raise UnsupportedBackend(error)
    if result is None:
        raise SystemFailed(f"{name}: {error or f'child exited with {rc}'}")
    return result


def _emit(msg: dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(msg) + "\n")
    sys.stdout.flush()


def child_main() -> int:
    import anyio

    from .adapters import load_factory
    from .system_run import run_system

    job = json.load(sys.stdin)
    factory = load_factory(job["ref"])
    params = WorkloadParams(**job["params"])
    baseline = peak_rss_mb()  # interpreter, libraries and the benchmark, before the system

    def progress(phase: str, seconds: float, steps: int) -> None:
        _emit({"progress": [phase, seconds, steps]})

    try:
        result = anyio.run(
            run_system, job["name"], factory, job["url"], params, job["run_id"], progress, CHILD
        )
    except UnsupportedBackend as exc:
        _emit({"error": str(exc), "unsupported": True})
        return 1
    except BaseException as exc:
        traceback.print_exc()
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    result.counts["baseline rss mb"] = round(baseline)
    _emit({"result": result.to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
