"""turnstore through its HTTP service (``python -m store serve``, a uvicorn process of its
own on a loopback port), driven with aiohttp: the same workload as ``store`` in process,
each begin, step and end one request (the whole-step form: a step and its results in one
POST; a turn's last step in the POST that finishes it). aiohttp rather than httpx: with
32 workers httpx spent about 13 ms of the benchmark process's CPU per step, which made the
client, not the service, what was measured."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import anyio
import httpx
import orjson

from ..dbtarget import check_schema_name, parse_db_url
from .base import Adapter, Duplicate, PartialStep
from .store_adapter import StoreAdapter

ROOT = Path(__file__).resolve().parents[2]


class _Turn:
    def __init__(self, turn_id: str, epoch: int) -> None:
        self.id = turn_id
        self.headers = {"Turn-Epoch": str(epoch)}
        self.ended = False


class _Client:
    """JSON over one aiohttp session."""

    def __init__(self, base: str) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.base = base
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=600)
        )

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = None if body is None else orjson.dumps(body)
        sent = {"content-type": "application/json", **(headers or {})}
        async with self.session.request(method, self.base + path, data=data,
                                        headers=sent) as response:  # fmt: skip
            payload = orjson.loads(await response.read())
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {payload.get('error')}")
            return payload

    async def close(self) -> None:
        await self.session.close()


class _HttpDuplicate(Duplicate):
    def __init__(self, client: _Client, turn_id: str) -> None:
        self._client = client
        self._turn_id = turn_id

    async def wait(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            view = await self._client.call("GET", f"/v1/turns/{self._turn_id}/wait?timeout=30")
            if view["ended"]:
                return


class StoreHttpAdapter(StoreAdapter):
    name: ClassVar[str] = "store-http"

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._server: subprocess.Popen[bytes] | None = None
        self._client: _Client | None = None
        self._log: Path | None = None

    async def setup(self, url: str, schema: str) -> None:
        self._target = target = parse_db_url(url)
        self._schema = check_schema_name(schema)
        db = target.sqlalchemy_url(schema)
        fd, log = tempfile.mkstemp(prefix="store-http-", suffix=".log")
        os.close(fd)
        self._log = Path(log)
        port = _free_port()
        command = [sys.executable, "-m", "store", "serve", "--db", db, "--port", str(port),
                   "--lease-seconds", "60", "--busy-timeout", "300", "--max-wait", "300",
                   "--pool-size", str(self.options.pool_size),
                   "--log-level", "warning"]  # fmt: skip
        if target.backend == "postgres":
            command += ["--schema", schema]
        self._server = await anyio.to_thread.run_sync(_spawn, command, self._log)
        base = await self._listening(f"http://127.0.0.1:{port}")
        self._client = _Client(base)
        await self._client.call("GET", "/v1/health")

    async def _listening(self, base: str) -> str:
        """Wait until the service answers its health check (its log stays at WARNING: the
        access log would cost CPU the benchmark would count)."""
        assert self._server is not None and self._log is not None
        with anyio.fail_after(60):
            async with httpx.AsyncClient(base_url=base) as probe:
                while True:
                    try:
                        if (await probe.get("/v1/health")).status_code == 200:
                            return base
                    except httpx.TransportError:
                        pass
                    if self._server.poll() is not None:
                        text = self._log.read_text(errors="replace")
                        raise RuntimeError(f"the service exited:\n{text[-2000:]}")
                    await anyio.sleep(0.05)

    async def teardown(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        server = self._server
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                await anyio.to_thread.run_sync(server.wait, 30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        self._server = None
        if self._log is not None:
            self._log.unlink(missing_ok=True)
        await super().teardown()

    async def preload(self, turns: Any) -> None:
        await Adapter.preload(self, turns)

    async def begin_turn(
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> Any:
        assert self._client is not None
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = await self._client.call("POST", f"/v1/conversations/{conversation_id}/turns",
                                       {"content": user_text}, headers)  # fmt: skip
        if body["duplicate"]:
            return _HttpDuplicate(self._client, body["turn_id"])
        return _Turn(body["turn_id"], body["epoch"])

    async def commit_step(self, turn: Any, assistant_text: str, calls: Any, results: Any) -> None:
        assert self._client is not None
        await self._client.call("POST", f"/v1/turns/{turn.id}/steps",
                                _step(assistant_text, calls, results), turn.headers)  # fmt: skip

    async def finish_turn(self, turn: Any) -> None:
        assert self._client is not None
        await self._client.call("POST", f"/v1/turns/{turn.id}/finish", None, turn.headers)
        turn.ended = True

    async def finish_with_step(
        self, turn: Any, assistant_text: str, calls: Any, results: Any
    ) -> None:
        assert self._client is not None
        final = {"final": _step(assistant_text, calls, results)}
        await self._client.call("POST", f"/v1/turns/{turn.id}/finish", final, turn.headers)
        turn.ended = True

    async def interrupt_turn(self, turn: Any, partial: PartialStep | None) -> None:
        client = self._client
        if client is None or turn.ended:
            return
        if partial is not None:  # refused if the cut request committed it after all
            step = _step(partial.assistant_text, partial.calls, partial.completed())
            with contextlib.suppress(RuntimeError):
                await client.call("POST", f"/v1/turns/{turn.id}/steps", step, turn.headers)
        with contextlib.suppress(RuntimeError):  # ended already (its last write landed)
            await client.call("POST", f"/v1/turns/{turn.id}/interrupt",
                              {"reason": "interrupted by the benchmark"}, turn.headers)  # fmt: skip
        turn.ended = True

    async def read_back(self) -> Any:
        self.counters.clear()
        return await _read_back(self)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def _step(text: str, calls: Any, results: Any) -> dict[str, Any]:
    return {
        "content": text,
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in calls],
        "results": [{"call_id": r.call_id, "content": r.output, "is_error": r.is_error}
                    for r in results],
    }  # fmt: skip


async def _read_back(adapter: StoreHttpAdapter) -> Any:
    """The rows, read straight from the tables as ``StoreAdapter.read_back`` does (the
    service holds the store, so there are no batch counters to show here)."""
    import sqlite3
    from contextlib import closing

    import asyncpg

    from .store_adapter import _READ_BACK, _check_rows

    target = adapter._target
    assert target is not None
    if target.backend == "postgres":
        assert target.asyncpg_dsn is not None
        conn = await asyncpg.connect(
            target.asyncpg_dsn, server_settings={"search_path": adapter._schema}
        )
        try:
            return _check_rows(await conn.fetch(_READ_BACK.format(cast="::text")))
        finally:
            await conn.close()
    path = target.sqlite_file(adapter._schema)

    def read() -> Any:
        with closing(sqlite3.connect(path)) as conn:
            return _check_rows(conn.execute(_READ_BACK.format(cast="")))

    return await anyio.to_thread.run_sync(read)


def make_store_http(options: Any) -> Adapter[Any]:
    return StoreHttpAdapter(options)
