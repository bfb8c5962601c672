"""turnstore through its HTTP service (``python -m store serve``, a uvicorn process of its
own on a loopback port), driven over keep-alive HTTP/1.1 connections: the same workload as
``store`` in process, each begin, step and end one request (the whole-step form: a step and
its results in one POST; a turn's last step in the POST that finishes it).

The client is a small one of its own (``_Client``: each request written in one write, the
response parsed with httptools, uvicorn's parser), because the benchmark process's CPU is
taken from the same two cores as the service's and the database's: with 32 workers httpx
spent about 13 ms of CPU per step, aiohttp about 1 ms (0.6 ms a request), this client
about 0.1 ms a request. It is what a runtime's own HTTP client (Node's fetch) costs
there, not what a Python library does."""

from __future__ import annotations

import asyncio
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

import anyio
import httptools
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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a request written whole in one write, its
    response parsed by httptools (uvicorn's parser) as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.body: list[bytes] = []
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the service closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        response, self.response = self.response, None
        if response is not None and not response.done():
            status = self.parser.get_status_code()
            keep_alive = self.parser.should_keep_alive()
            response.set_result((status, b"".join(self.body), keep_alive))
        self.body = []

    def _fail(self, exc: BaseException) -> None:
        response, self.response = self.response, None
        if response is not None and not response.done():
            response.set_exception(exc)

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes, bool]:
        assert self.transport is not None and self.response is None
        self.response = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        return await self.response

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Client:
    """JSON over keep-alive HTTP/1.1 connections, one request at a time on each (a pool
    that grows to the number of requests in flight). A request cut by a cancellation (the
    benchmark's interrupts) closes its connection, as any client must."""

    #: reuse a connection idle for less than this (the service keeps one 30 s)
    IDLE_S = 20.0

    def __init__(self, base: str) -> None:
        self.base = base
        address = base.removeprefix("http://")
        host, _, port = address.partition(":")
        self.host, self.port = host, int(port)
        self.host_header = f"Host: {address}\r\n"
        self.idle: list[_Connection] = []

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.IDLE_S:
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = b"" if body is None else orjson.dumps(body)
        lines = [f"{method} {path} HTTP/1.1\r\n", self.host_header]
        if body is not None:
            lines.append(f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n")
        elif method != "GET":
            lines.append("Content-Length: 0\r\n")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode()
        conn = await self._connection()
        try:
            status, payload, keep_alive = await conn.request(head, data)
        except BaseException:
            conn.close()  # cut or broken: its state is unknown
            raise
        if keep_alive and not conn.closed:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()
        if status >= 400:
            try:
                error = orjson.loads(payload).get("error")
            except (orjson.JSONDecodeError, AttributeError):
                error = payload[:200]
            raise RuntimeError(f"{method} {path}: {status} {error}")
        return orjson.loads(payload)

    async def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


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
