"""A throwaway PostgreSQL server: ``initdb`` into a temporary directory, started on a free
port of 127.0.0.1, removed at the end. The soak and the fault tests restart *this* server,
never one they did not start.

    with ThrowawayPostgres() as pg:
        url = pg.url                  # postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
        pg.restart("immediate")       # or "fast"; pg.stop(...), pg.start()

``settings`` are extra postgresql.conf lines, written once after ``initdb`` (a node of a
Citus cluster: ``{"shared_preload_libraries": "'citus'"}``, values as the file spells them).

It needs PostgreSQL's server programs (``initdb``, ``pg_ctl``: Debian's postgresql package
puts them in /usr/lib/postgresql/<version>/bin). Run as root, it runs them as the
``postgres`` user, which initdb requires.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

StopMode = Literal["smart", "fast", "immediate"]


class ServerUnavailable(RuntimeError):
    """PostgreSQL's server programs are missing, or the server would not start."""


def find_bin(name: str) -> str:
    """The path of a PostgreSQL server program: on PATH, else the newest Debian install."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise ServerUnavailable(
        f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """A PostgreSQL server of our own, for tests and the soak. ``fsync`` is off: a crash
    of the *server process* (``-m immediate``) is what it simulates, and that loses
    nothing committed with or without fsync; a power loss is not simulated."""

    def __init__(
        self,
        *,
        port: int | None = None,
        database: str = "postgres",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.database = database
        self.settings = dict(settings or {})
        self._dir: Path | None = None
        self._as_postgres = os.geteuid() == 0

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> ThrowawayPostgres:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise ServerUnavailable("the server was not created (call create() first)")
        return self._dir

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def create(self) -> None:
        """initdb and start."""
        self._dir = Path(tempfile.mkdtemp(prefix="turnstore-pg-"))
        if self._as_postgres:
            shutil.chown(self._dir, "postgres")
        self._run(
            find_bin("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if self.settings:
            lines = "".join(f"{name} = {value}\n" for name, value in self.settings.items())
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(f"\n# --- ThrowawayPostgres settings ---\n{lines}")
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            find_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: StopMode = "fast") -> None:
        self._run(find_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: StopMode = "fast", *, outage: float = 0.0) -> None:
        """Stop the server (``fast``: terminate sessions, checkpoint; ``immediate``: a crash,
        recovered from WAL at the next start), stay down ``outage`` seconds, start again."""
        self.stop(mode)
        if outage > 0:
            time.sleep(outage)
        self.start()

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def postmaster_pid(self) -> int:
        """The running server's process id (its first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def remove(self) -> None:
        """Stop the server (if it runs) and delete its directory."""
        if self._dir is None:
            return
        try:
            if self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, *argv: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServerUnavailable(
                f"{Path(argv[0]).name} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
