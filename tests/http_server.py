"""A real ``python -m store serve`` in a subprocess, on a free loopback port, for the HTTP
service's tests; and the databases it serves (a SQLite file, or a fresh PostgreSQL
schema, dropped afterwards)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest

from .conftest import PG_URL, _require_postgres, asyncpg_dsn

_LISTENING = re.compile(r"Uvicorn running on http://([0-9.]+):(\d+)")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Database:
    kind: str
    url: str
    schema: str | None

    def args(self) -> list[str]:
        return ["--db", self.url, *(["--schema", self.schema] if self.schema else [])]


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[Database]:
    """A database for one server (or several, one after another)."""
    if kind == "sqlite":
        yield Database("sqlite", f"sqlite:///{tmp / f'http-{uuid.uuid4().hex[:8]}.db'}", None)
        return
    if PG_URL == "skip":
        pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")
    anyio.run(_require_postgres)
    schema = f"h_{uuid.uuid4().hex[:12]}"
    try:
        yield Database("postgres", PG_URL, schema)
    finally:
        anyio.run(_drop, schema)


async def _drop(schema: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(PG_URL))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class Server:
    """``python -m store serve`` on a port of its own choosing (--port 0), its output in
    a log file."""

    def __init__(self, db: Database, log: Path, *args: str) -> None:
        self.db = db
        self.log_path = log
        command = [sys.executable, "-m", "store", "serve", *db.args(), "--port", "0", *args]
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ)
        )
        self.url = self._wait_listening()

    def _wait_listening(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            match = _LISTENING.search(text.split("Started server process")[-1])
            if match and "Application startup complete" in text.split("Started server")[-1]:
                return f"http://{match[1]}:{match[2]}"
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{text}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process dies wherever it is."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def client(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def serving(db: Database, log: Path, *args: str) -> Iterator[Server]:
    server = Server(db, log, *args)
    try:
        yield server
    finally:
        server.stop()


PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int, error: str) -> dict[str, object]:
    """Assert ``response`` is an RFC 9457 problem with this status and error name."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, object] = response.json()
    assert body["status"] == status and body["error"] == error, body
    assert isinstance(body["detail"], str) and body["type"] == f"urn:turnstore:error:{error}"
    return body
