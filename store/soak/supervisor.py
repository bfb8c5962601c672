"""The soak's supervisor: the worker processes, and the faults injected into them and into
the database.

Faults (``FAULTS``):

- ``kill``: SIGKILL a worker and start a new one in its place;
- ``stop``: SIGSTOP a worker for longer than the lease (lease + 0.5..2 s), then SIGCONT;
- ``terminate``: ``pg_terminate_backend`` every turnstore session (PostgreSQL);
- ``restart``: restart the PostgreSQL server that the soak started, ``-m fast`` or
  ``-m immediate``, sometimes with an outage of 2-4 s.

One every 1-3 s (seeded); the first ones go through every requested kind once, in a
shuffled order, so that a short run injects each kind. Faults on workers may overlap each
other and one on the server; faults on the server never overlap each other.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import asyncpg

from .pgserver import StopMode, ThrowawayPostgres

FAULTS = ("kill", "stop", "terminate", "restart")
SERVER_FAULTS = frozenset({"terminate", "restart"})
OWN_SERVER_SESSIONS = "turnstore%"
SHORT_RETRY_SECONDS = 0.5


@dataclass
class WorkerProcess:
    slot: int
    generation: int
    name: str
    process: anyio.abc.Process
    log: Path
    output: Path
    stopped: bool = False  # SIGSTOPped right now
    ended_by_us: bool = False  # killed or told to stop: its exit is not a crash

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Crash:
    name: str
    returncode: int | None
    output_tail: str


class Workers:
    """``count`` worker processes; a slot whose worker is killed gets a new one."""

    def __init__(self, command: Callable[[str, Path], list[str]], directory: Path, count: int):
        self._command = command
        self.directory = directory
        self.count = count
        self.current: dict[int, WorkerProcess] = {}
        self.started = 0
        self.crashes: list[Crash] = []
        self._generations: Counter[int] = Counter()

    async def start_all(self) -> None:
        for slot in range(self.count):
            await self.start(slot)

    async def start(self, slot: int) -> WorkerProcess:
        self._generations[slot] += 1
        generation = self._generations[slot]
        name = f"w{slot}g{generation}"
        log = self.directory / f"{name}.jsonl"
        output = self.directory / f"{name}.out"
        with output.open("ab") as out:
            process = await anyio.open_process(
                self._command(name, log), stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        worker = WorkerProcess(slot, generation, name, process, log, output)
        self.current[slot] = worker
        self.started += 1
        return worker

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every worker has opened its store (its log says ``ready``): faults
        start on workers that run turns, not on interpreters still importing."""
        deadline = anyio.current_time() + timeout
        while anyio.current_time() < deadline:
            if all(_is_ready(w.log) for w in self.current.values()):
                return True
            await anyio.sleep(0.1)
        return False

    def running(self) -> list[WorkerProcess]:
        """Workers that run now (not stopped, not exited)."""
        return [
            w
            for w in self.current.values()
            if not w.stopped and not w.ended_by_us and w.process.returncode is None
        ]

    async def kill(self, worker: WorkerProcess) -> None:
        worker.ended_by_us = True
        worker.process.kill()
        await worker.process.wait()
        await self.start(worker.slot)

    async def watch(self) -> None:
        """Restart a worker that exited by itself (a crash: the soak counts it)."""
        while True:
            await anyio.sleep(0.5)
            for worker in list(self.current.values()):
                if worker.ended_by_us or worker.process.returncode is None:
                    continue
                worker.ended_by_us = True
                tail = worker.output.read_bytes()[-2000:].decode(errors="replace")
                self.crashes.append(Crash(worker.name, worker.process.returncode, tail))
                await self.start(worker.slot)

    async def stop_all(self, grace: float) -> None:
        """SIGCONT the stopped, SIGTERM all, SIGKILL those still running after ``grace``."""
        workers = list(self.current.values())
        for w in workers:
            w.ended_by_us = True
            if w.process.returncode is None:
                with _gone():
                    os.kill(w.pid, signal.SIGCONT)
                    w.process.terminate()
        with anyio.move_on_after(grace):
            for w in workers:
                await w.process.wait()
        for w in workers:
            if w.process.returncode is None:
                w.process.kill()
                await w.process.wait()
        for w in workers:
            await w.process.aclose()


def _is_ready(log: Path) -> bool:
    try:
        return b'"t":"ready"' in log.read_bytes()
    except OSError:
        return False


class _gone:
    """Ignore ProcessLookupError: the process exited meanwhile."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> bool:
        return exc_type is not None and issubclass(exc_type, ProcessLookupError)


@dataclass
class FaultLog:
    counts: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    terminated_sessions: int = 0
    last: str = ""

    def add(self, started: float, kind: str, **detail: Any) -> None:
        self.counts[kind] += 1
        event = {"at": round(time.monotonic() - started, 2), "kind": kind, **detail}
        self.events.append(event)
        self.last = " ".join(f"{k}={v}" for k, v in event.items() if k != "at")


class Faults:
    """Injects faults of ``kinds`` until a deadline."""

    def __init__(
        self,
        kinds: list[str],
        rng: random.Random,
        workers: Workers,
        lease: float,
        *,
        server: ThrowawayPostgres | None = None,
        dsn: str | None = None,
        sessions: str = OWN_SERVER_SESSIONS,
    ) -> None:
        self.kinds = kinds
        self.rng = rng
        self.workers = workers
        self.lease = lease
        self.server = server
        self.dsn = dsn
        self.sessions = sessions  # the application_name pattern that ``terminate`` hits
        self.log = FaultLog()
        self._server_busy = False
        self._started = time.monotonic()

    async def run(self, duration: float) -> None:
        """Inject faults for ``duration`` seconds, then wait for those in flight to end."""
        self._started = time.monotonic()
        deadline = anyio.current_time() + duration
        first_round = list(self.kinds)
        self.rng.shuffle(first_round)
        async with anyio.create_task_group() as tg:
            while True:
                pause = self.rng.uniform(1.0, 3.0)
                if anyio.current_time() + pause >= deadline:
                    break
                await anyio.sleep(pause)
                kind = self._next(first_round)
                if kind is not None:
                    tg.start_soon(self._inject, kind)

    def _next(self, first_round: list[str]) -> str | None:
        """The next kind: the first round's, else a random one; a fault on the server only
        when none runs (another kind instead, or the same later)."""
        possible = [
            k
            for k in self.kinds
            if not (k in SERVER_FAULTS and self._server_busy)
            and not (k in ("kill", "stop") and not self.workers.running())
        ]
        for kind in first_round:
            if kind in possible:
                first_round.remove(kind)
                return kind
        return self.rng.choice(possible) if possible else None

    async def _inject(self, kind: str) -> None:
        try:
            if kind == "kill":
                await self._kill()
            elif kind == "stop":
                await self._stop()
            else:
                self._server_busy = True
                try:
                    await (self._terminate() if kind == "terminate" else self._restart())
                finally:
                    self._server_busy = False
        except Exception as exc:  # the fault could not be injected: the run cannot vouch
            self.log.errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    async def _kill(self) -> None:
        running = self.workers.running()
        if not running:
            return
        worker = self.rng.choice(running)
        self.log.add(self._started, "kill", worker=worker.name)
        await self.workers.kill(worker)

    async def _stop(self) -> None:
        running = self.workers.running()
        if not running:
            return
        worker = self.rng.choice(running)
        seconds = self.lease + self.rng.uniform(0.5, 2.0)
        self.log.add(self._started, "stop", worker=worker.name, seconds=round(seconds, 2))
        worker.stopped = True
        try:
            with _gone():
                os.kill(worker.pid, signal.SIGSTOP)
            await anyio.sleep(seconds)
        finally:
            with _gone():
                os.kill(worker.pid, signal.SIGCONT)
            worker.stopped = False

    async def _terminate(self) -> None:
        assert self.dsn is not None
        conn = await asyncpg.connect(
            self.dsn, timeout=5, server_settings={"application_name": "soak-supervisor"}
        )
        try:
            killed = await conn.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE $1 AND pid <> pg_backend_pid()) AS t",
                self.sessions,
            )
        finally:
            await conn.close()
        self.log.terminated_sessions += int(killed or 0)
        self.log.add(self._started, "terminate", sessions=int(killed or 0))

    async def _restart(self) -> None:
        assert self.server is not None, "restart is only offered on a server the soak started"
        mode: StopMode = self.rng.choice(("fast", "immediate"))
        outage = round(self.rng.uniform(2.0, 4.0), 2) if self.rng.random() < 0.4 else 0.0
        self.log.add(self._started, "restart", mode=mode, outage=outage)
        server = self.server
        try:
            await anyio.to_thread.run_sync(lambda: server.restart(mode, outage=outage))
        except Exception:
            if not server.is_running():  # bring it back for the rest of the run
                await anyio.to_thread.run_sync(server.start)
            raise


def worker_command(
    url: str,
    schema: str | None,
    run: str,
    conversations: int,
    lease: float,
    tasks: int,
    seed: int,
) -> Callable[[str, Path], list[str]]:
    """The command line of a worker, given its name (``w<slot>g<generation>``) and log
    file. Workers of odd slots give up retrying after ``SHORT_RETRY_SECONDS``: a restart
    or a cut connection then reaches them as ``WriteNotApplied`` or ``OutcomeUnknown``,
    and the same write called again must be answered exactly; the others keep the
    library's default budget, which rides out the faults inside each call."""

    def command(name: str, log: Path) -> list[str]:
        argv = [sys.executable, "-m", "store.soak.worker", "--db", url, "--log", str(log)]
        if schema:
            argv += ["--schema", schema]
        if int(name[1:].split("g")[0]) % 2:
            argv += ["--retry-seconds", str(SHORT_RETRY_SECONDS)]
        worker_seed = zlib.crc32(f"{seed}:{name}".encode())
        return [
            *argv,
            "--run", run, "--name", name, "--conversations", str(conversations),
            "--lease", str(lease), "--tasks", str(tasks), "--seed", str(worker_seed),
        ]  # fmt: skip

    return command
