"""The fast path (``store.server.fastpath``) answers every request exactly as FastAPI does:
the same script of valid and invalid requests — bad headers, parameters, bodies, content
types, tokens, another tenant's turn, refusals of the store, sizes over the limits — sent
to the app with and without it, on both databases, gets the same statuses, headers and
bodies (turn ids and times aside)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from store.server.app import ServiceConfig, create_app
from store.server.fastpath import FastPath
from store.server.limits import Limits

from .conftest import Target

TOKENS = {"acme": "tok-acme-0123456789abcdef", "beta": "tok-beta-0123456789abcdef"}
_TURN_ID = re.compile(r"turn_[0-9a-f]{32}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_MS = re.compile(r"\d+\.\d+m?s\b")


@asynccontextmanager
async def _app(target: Target, fast_path: bool) -> AsyncIterator[Any]:
    config = ServiceConfig(
        db=target.url,
        schema=target.schema,
        tokens=[(hashlib.sha256(t.encode()).digest(), name) for name, t in TOKENS.items()],
        limits=Limits(max_request_bytes=64 * 1024, max_message_bytes=16 * 1024),
        lease_seconds=30,
        busy_timeout=0.2,
        max_wait=1.0,
        fast_path=fast_path,
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        yield app


def _client(app: Any, tenant: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {TOKENS[tenant]}"} if tenant else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://service",
        headers=headers,
    )


class Script:
    """Sends requests, keeps what came back, with turn ids and times made comparable."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str, Any]] = []
        self.ids: dict[str, str] = {}

    def _same(self, text: str) -> str:
        text = _TURN_ID.sub(lambda m: self.ids.setdefault(m[0], f"<turn {len(self.ids)}>"), text)
        text = _MS.sub("<ms>", _TIME.sub("<time>", text))
        return text.replace("acme/", "<tenant>/").replace("beta/", "<tenant>/")

    async def send(self, label: str, client: httpx.AsyncClient, method: str, path: str,
                   **kwargs: Any) -> Any:  # fmt: skip
        r = await client.request(method, path, **kwargs)
        try:
            body: Any = orjson.loads(self._same(r.text))
        except orjson.JSONDecodeError:
            body = self._same(r.text)
        headers = sorted((k, self._same(v)) for k, v in r.headers.items() if k != "date")
        self.seen.append((label, r.status_code, str(headers), body))
        return r.json() if r.text and r.headers.get("content-type", "").endswith("json") else None


JSON = {"content-type": "application/json"}


async def _script(app: Any, me: str, other: str) -> Script:
    s = Script()
    async with _client(app, me) as c, _client(app, other) as o, _client(app, None) as anon:
        conv = "/v1/conversations/conv-1/turns"
        # begin: valid, duplicate, and every kind of bad request
        turn = await s.send("begin", c, "POST", conv, json={"content": "hi"},
                            headers={"Idempotency-Key": "k1"})  # fmt: skip
        await s.send("begin again", c, "POST", conv, json={"content": "hi"},
                     headers={"Idempotency-Key": "k1"})  # fmt: skip
        await s.send("busy", c, "POST", conv, json={"content": "x", "on_busy": "fail"})
        for label, kwargs in {
            "no body": {},
            "empty body": {"content": b"", "headers": JSON},
            "not json": {"content": b"{nope", "headers": JSON},
            "json null": {"content": b"null", "headers": JSON},
            "a list": {"json": ["hi"]},
            "no content-type": {"content": b'{"content": "hi"}'},
            "text/plain": {"content": b'{"content": "hi"}',
                           "headers": {"content-type": "text/plain"}},
            "+json": {"content": b'{"content": "x", "on_busy": "fail"}',
                      "headers": {"content-type": "application/vnd.x+json"}},
            "charset": {"content": b'{"content": "x", "on_busy": "fail"}',
                        "headers": {"content-type": "application/json; charset=utf-8"}},
            "bad on_busy": {"json": {"content": "hi", "on_busy": "never"}},
            "bad timeout": {"json": {"content": "hi", "timeout": -1}},
            "empty key": {"json": {"content": "x"}, "headers": {"Idempotency-Key": ""}},
            "long key": {"json": {"content": "x"}, "headers": {"Idempotency-Key": "k" * 257}},
            "two keys": {"json": {"content": "x"},
                         "headers": [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]},
            "query": {"json": {"content": "x", "on_busy": "fail"}, "params": {"x": "1"}},
            "too large": {"json": {"content": "x" * 70_000}},
            "message too large": {"json": {"content": "x" * 20_000}},
            "bad part": {"json": {"content": [{"type": "image"}]}},
        }.items():  # fmt: skip
            await s.send(f"begin, {label}", c, "POST", conv, **kwargs)
            # and on a conversation of its own: past the busy one, to what the store says
            free = re.sub(r"\W+", "-", label)
            await s.send(f"begin, {label}, free", c, "POST", f"/v1/conversations/{free}/turns",
                         **kwargs)  # fmt: skip
        await s.send("begin, long id", c, "POST", f"/v1/conversations/{'c' * 257}/turns",
                     json={"content": "x"})  # fmt: skip
        await s.send("begin, no token", anon, "POST", conv, json={"content": "x"})
        await s.send("begin, bad token", c, "POST", conv, json={"content": "x"},
                     headers={"Authorization": "Bearer nope-nope-nope-nope"})  # fmt: skip

        tid, e = turn["turn_id"], {"Turn-Epoch": str(turn["epoch"])}
        step = {"content": "calling", "tool_calls": [{"id": "c1", "name": "f", "arguments": {}}],
                "results": [{"call_id": "c1", "content": "ok"}]}  # fmt: skip
        # the whole-step form, and bad epochs, ids, bodies
        for label, headers in {
            "no epoch": {},
            "epoch abc": {"Turn-Epoch": "abc"},
            "epoch -1": {"Turn-Epoch": "-1"},
            "epoch 01": {"Turn-Epoch": "01"},
            "epoch +1": {"Turn-Epoch": "+1"},
            "epoch spaces": {"Turn-Epoch": " 1 "},
            "epoch 1.0": {"Turn-Epoch": "1.0"},
            "epoch huge": {"Turn-Epoch": str(2**53)},
            "wrong epoch": {"Turn-Epoch": "7"},
            "two epochs": [("Turn-Epoch", "1"), ("Turn-Epoch", "1")],
        }.items():
            await s.send(f"step, {label}", c, "POST", f"/v1/turns/{tid}/steps", json=step,
                         headers=headers)  # fmt: skip
        for label, body in {
            "result without call": {"content": "x", "results": [{"call_id": "zz"}]},
            "call without result": {"tool_calls": [{"id": "c9", "name": "f"}]},
            "bad calls": {"tool_calls": "nope"},
            "step 0": {**step, "step": 0},
            "step 5": {**step, "step": 5},
        }.items():
            await s.send(f"step, {label}", c, "POST", f"/v1/turns/{tid}/steps", json=body,
                         headers=e)  # fmt: skip
        await s.send("step", c, "POST", f"/v1/turns/{tid}/steps", json={**step, "step": 1},
                     headers=e)  # fmt: skip
        await s.send("step again", c, "POST", f"/v1/turns/{tid}/steps",
                     json={**step, "step": 1}, headers=e)  # fmt: skip
        await s.send("step reused id", c, "POST", f"/v1/turns/{tid}/steps", json=step, headers=e)
        await s.send("step, long turn id", c, "POST", f"/v1/turns/{'t' * 65}/steps", json=step,
                     headers=e)  # fmt: skip
        await s.send("step, unknown turn", c, "POST", "/v1/turns/turn_nope/steps", json=step,
                     headers=e)  # fmt: skip
        await s.send("step, other tenant", o, "POST", f"/v1/turns/{tid}/steps", json=step,
                     headers=e)  # fmt: skip
        await s.send("step, slash", c, "POST", f"/v1/turns/{tid}/steps/", json=step, headers=e)
        # events
        ev = f"/v1/turns/{tid}/events"
        await s.send("events", c, "POST", ev, headers=e, json={"seq": 0, "events": [
            {"type": "text", "text": "a"},
            {"type": "tool_call", "id": "c2", "name": "f", "arguments": {"x": 1}}]})  # fmt: skip
        await s.send("events, gap", c, "POST", ev, headers=e,
                     json={"seq": 5, "events": [{"type": "text", "text": "b"}]})  # fmt: skip
        await s.send("events, unknown type", c, "POST", ev, headers=e,
                     json={"events": [{"type": "nope"}]})  # fmt: skip
        await s.send("events, none", c, "POST", ev, headers=e, json={"events": []})
        nothing = {"seq": 2, "events": [{"type": "tool_result", "call_id": "zz"}]}
        await s.send("events, result for nothing", c, "POST", ev, headers=e, json=nothing)
        await s.send("heartbeat", c, "POST", f"/v1/turns/{tid}/heartbeat", headers=e)
        await s.send("heartbeat, body", c, "POST", f"/v1/turns/{tid}/heartbeat", headers=e,
                     json={"what": 1})  # fmt: skip
        # usage
        us = f"/v1/turns/{tid}/usage"
        for label, kwargs in {
            "usage": {"json": {"prompt_tokens": 10, "cost_usd": 0.25},
                      "headers": {**e, "Idempotency-Key": "u1"}},
            "usage again": {"json": {"prompt_tokens": 10, "cost_usd": 0.25},
                            "headers": {**e, "Idempotency-Key": "u1"}},
            "usage, other": {"json": {"prompt_tokens": 11},
                             "headers": {**e, "Idempotency-Key": "u1"}},
            "usage, negative": {"json": {"prompt_tokens": -1}, "headers": e},
            "usage, step": {"json": {"completion_tokens": 3, "step": 1, "model": "m"},
                            "headers": e},
        }.items():  # fmt: skip
            await s.send(label, c, "POST", us, **kwargs)
        await s.send("usage, read", c, "GET", us)
        # state and long poll
        await s.send("state", c, "GET", f"/v1/turns/{tid}")
        for label, params in {
            "wait 0": {"timeout": "0"}, "wait 0.1": {"timeout": "0.1"},
            "wait abc": {"timeout": "abc"},
            "wait -1": {"timeout": "-1"}, "wait extra": {"timeout": "0", "x": "y"},
            "wait twice": [("timeout", "0"), ("timeout", "0")], "wait blank": {"timeout": ""},
        }.items():  # fmt: skip
            await s.send(label, c, "GET", f"/v1/turns/{tid}/wait", params=params)
        await s.send("wait, other tenant", o, "GET", f"/v1/turns/{tid}/wait",
                     params={"timeout": 0})  # fmt: skip
        await s.send("state, HEAD", c, "HEAD", f"/v1/turns/{tid}")
        # ending: bodies, idempotence, the other ends
        fin = f"/v1/turns/{tid}/finish"
        await s.send("finish, bad body", c, "POST", fin, headers=e, json={"final": "x"})
        await s.send("finish, not json", c, "POST", fin, headers={**e, **JSON}, content=b"[")
        await s.send("finish", c, "POST", fin, headers=e,
                     json={"final": {"content": "done"}})  # fmt: skip
        await s.send("finish again", c, "POST", fin, headers=e)
        await s.send("finish null", c, "POST", fin, headers={**e, **JSON}, content=b"null")
        await s.send("finish {}", c, "POST", fin, headers=e, json={})
        await s.send("fail after finish", c, "POST", f"/v1/turns/{tid}/fail", headers=e,
                     json={"reason": "x"})  # fmt: skip
        await s.send("interrupt after finish", c, "POST", f"/v1/turns/{tid}/interrupt",
                     headers=e)  # fmt: skip
        await s.send("heartbeat after finish", c, "POST", f"/v1/turns/{tid}/heartbeat", headers=e)
        await s.send("step after finish", c, "POST", f"/v1/turns/{tid}/steps", json=step,
                     headers=e)  # fmt: skip
        # a second turn, interrupted with its open step
        t2 = await s.send("begin 2", c, "POST", conv, json={"content": "again"})
        e2 = {"Turn-Epoch": str(t2["epoch"])}
        await s.send("events 2", c, "POST", f"/v1/turns/{t2['turn_id']}/events", headers=e2,
                     json={"events": [{"type": "tool_call", "id": "c3", "name": "f"}]})  # fmt: skip
        await s.send("state 2", c, "GET", f"/v1/turns/{t2['turn_id']}")
        await s.send("interrupt, long reason", c, "POST", f"/v1/turns/{t2['turn_id']}/interrupt",
                     headers=e2, json={"reason": "r" * 5000})  # fmt: skip
        await s.send("interrupt 2", c, "POST", f"/v1/turns/{t2['turn_id']}/interrupt",
                     headers=e2, json={"reason": "stop"})  # fmt: skip
        await s.send("history", c, "GET", "/v1/conversations/conv-1/messages")
        # an unexpected error: a 500 problem (and the error raised on, for the server's log)
        service = app.state.service
        hold = service.live.hold

        def broken(turn_id: str, *args: Any) -> Any:
            if turn_id == "turn_boom":
                raise RuntimeError("a bug")
            return hold(turn_id, *args)

        service.live.hold = broken
        await s.send("a bug", c, "POST", "/v1/turns/turn_boom/heartbeat", headers=e)
        service.live.hold = hold
    return s


def _access_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The access log's lines (method, route template, status), the times left out."""
    lines = [_MS.sub("<ms>", r.getMessage()) for r in caplog.records
             if r.name == "turnstore.http.access" and r.levelno == logging.INFO]  # fmt: skip
    caplog.clear()
    return lines


async def test_the_fast_path_answers_as_fastapi_does(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="turnstore.http.access")
    async with _app(target, fast_path=True) as fast:
        with_it = await _script(fast, "acme", "beta")
        logged_with = _access_log(caplog)
        layer = fast.front
        while not isinstance(layer, FastPath):
            layer = layer.app
        # most valid requests were served by it, every odd one by FastAPI
        assert layer.served >= 30 and layer.handed_over >= 30, (layer.served, layer.handed_over)
    async with _app(target, fast_path=False) as plain:
        without = await _script(plain, "beta", "acme")
        logged_without = _access_log(caplog)
    assert len(with_it.seen) == len(without.seen)
    for a, b in zip(with_it.seen, without.seen, strict=True):
        assert a == b
    # the access log too: each request's route template (never its ids) and status
    assert logged_with == logged_without
    assert "POST /v1/turns/{turn_id}/steps 201 <ms>" in logged_with
    statuses = {status for _, status, _, _ in with_it.seen}
    assert {200, 201, 401, 404, 405, 409, 413, 422, 500} <= statuses
