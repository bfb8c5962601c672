"""The HTTP service against a real server (``python -m store serve`` in a subprocess), on
both databases: every endpoint, the runtime's turn as events, idempotent submits and ends,
refusals that write nothing, usage, history with stable ids, replay, erasure, limits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from store import sql
from store.messages import INTERRUPTED

from .conftest import BACKENDS, on_postgres
from .http_server import Server, database, problem, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("http")
    with database(request.param, tmp) as db, serving(db, tmp / "server.log") as running:
        yield running


@pytest.fixture
async def client(server: Server, request: pytest.FixtureRequest) -> Any:
    if server.db.kind == "postgres":
        on_postgres(request)
    async with server.client() as c:
        yield c


def cid() -> str:
    return f"conv-{uuid.uuid4().hex[:10]}"


async def begin(c: httpx.AsyncClient, conversation: str, content: Any = "hello",
                **headers: str) -> dict[str, Any]:  # fmt: skip
    r = await c.post(f"/v1/conversations/{conversation}/turns", json={"content": content},
                     headers=headers)  # fmt: skip
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


def epoch(turn: dict[str, Any]) -> dict[str, str]:
    return {"Turn-Epoch": str(turn["epoch"])}


async def events(c: httpx.AsyncClient, turn: dict[str, Any], *evs: dict[str, Any],
                 seq: int | None = None) -> httpx.Response:  # fmt: skip
    body: dict[str, Any] = {"events": list(evs)}
    if seq is not None:
        body["seq"] = seq
    return await c.post(f"/v1/turns/{turn['turn_id']}/events", json=body, headers=epoch(turn))


async def messages(c: httpx.AsyncClient, conversation: str, **params: Any) -> dict[str, Any]:
    r = await c.get(f"/v1/conversations/{conversation}/messages", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def shape(history: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(m["role"], m["tool_call_id"], m["is_error"]) for m in history["messages"]]


async def test_health_openapi_and_docs(client: httpx.AsyncClient, server: Server) -> None:
    r = await client.get("/v1/health")
    # what the server's Store.open applied: on PostgreSQL all but trailing contract
    # migrations (those are python -m store migrate's), on SQLite all
    dialect = "postgres" if server.db.kind == "postgres" else "sqlite"
    applied = sql.needed_version(dialect) if dialect == "postgres" else len(sql.migrations(dialect))
    assert r.json() == {"status": "ok", "schema_version": applied}
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/turns/{turn_id}/events" in doc["paths"]
    assert (await client.get("/docs")).status_code == 200
    problem(await client.get("/v1/nothing-here"), 404, "NotFound")


async def test_the_runtime_s_turn_as_events(client: httpx.AsyncClient) -> None:
    """text, call, call, result, result, usage, finish: one step with both results, the
    answer as the last step, usage summed in history."""
    conv = cid()
    turn = await begin(client, conv, [{"type": "text", "text": "Build a bakery page"}])
    assert turn["status"] == "running" and not turn["duplicate"] and turn["epoch"] >= 1
    sent = [
        {"type": "text", "text": "Let me add "},
        {"type": "text", "text": "two sections."},
        {"type": "tool_call", "id": f"{conv}-a", "name": "insertHtml", "arguments": {"n": 1}},
        {"type": "tool_call", "id": f"{conv}-b", "name": "insertHtml", "arguments": {"n": 2}},
        {"type": "tool_result", "call_id": f"{conv}-b", "content": "b ok"},
        {"type": "tool_result", "call_id": f"{conv}-a", "content": [{"type": "text", "text": "a"}]},
    ]
    acks = []
    for n, event in enumerate(sent):  # one request per event, as the runtime persists them
        r = await events(client, turn, event, seq=n)
        assert r.status_code == 200, r.text
        acks.append(r.json())
    assert acks[3]["open_step"]["unanswered"] == [f"{conv}-a", f"{conv}-b"]
    assert acks[4]["open_step"]["unanswered"] == [f"{conv}-a"] and acks[4]["steps"] == 0
    assert acks[5]["committed"] == [1] and acks[5]["open_step"] is None
    r = await events(client, turn, {"type": "text", "text": "Done."}, seq=6)
    assert r.json()["open_step"]["step"] == 2
    r = await client.post(f"/v1/turns/{turn['turn_id']}/usage", headers=epoch(turn),
                          json={"prompt_tokens": 1200, "completion_tokens": 80,
                                "cache_read_tokens": 1000, "cost_usd": 0.0042})  # fmt: skip
    assert r.status_code == 201 and r.json()["step"] is None
    r = await client.post(f"/v1/turns/{turn['turn_id']}/finish", headers=epoch(turn))
    assert r.status_code == 200 and r.json()["status"] == "finished"
    assert r.json()["steps"] == 2 and r.json()["usage"]["prompt_tokens"] == 1200

    history = await messages(client, conv)
    assert shape(history) == [("user", None, False), ("assistant", None, False),
                              ("tool", f"{conv}-a", False), ("tool", f"{conv}-b", False),
                              ("assistant", None, False)]  # fmt: skip
    step = history["messages"][1]
    assert step["content"] == [{"type": "text", "text": "Let me add two sections."}]
    assert [c["id"] for c in step["tool_calls"]] == [f"{conv}-a", f"{conv}-b"]
    assert history["messages"][3]["content"] == [{"type": "text", "text": "b ok"}]
    usage = history["usage"]
    assert usage["conversation"]["cost_usd"] == 0.0042
    assert usage["turns"][turn["turn_id"]]["cache_read_tokens"] == 1000
    # stable ids: the same message has the same id in every read, and reads back alone
    again = await messages(client, conv, last=1)
    assert [m["id"] for m in again["messages"]] == [m["id"] for m in history["messages"]]
    one = await client.get(f"/v1/conversations/{conv}/messages/{step['id']}")
    assert one.json() == step
    problem(await client.get(f"/v1/conversations/{conv}/messages/m1.turn_x"), 404,
            "MessageNotFound")  # fmt: skip


async def test_a_repeated_idempotency_key_returns_the_first_turn(client: httpx.AsyncClient) -> None:
    conv = cid()
    first = await begin(client, conv, "go", **{"Idempotency-Key": "req-1"})
    second = await begin(client, conv, "go", **{"Idempotency-Key": "req-1"})
    assert second["duplicate"] and second["turn_id"] == first["turn_id"]
    assert second["epoch"] is None
    r = await client.post(f"/v1/conversations/{conv}/turns", json={"content": "other"},
                          headers={"Idempotency-Key": "req-1"})  # fmt: skip
    problem(r, 422, "InvalidMessage")
    # a duplicate cannot write: it has no epoch, and a guess is refused
    r = await client.post(f"/v1/turns/{first['turn_id']}/steps", json={"content": "x"},
                          headers={"Turn-Epoch": str(first["epoch"] + 1)})  # fmt: skip
    problem(r, 409, "LeaseLost")
    assert [m["role"] for m in (await messages(client, conv))["messages"]] == ["user"]


async def test_a_busy_conversation_fails_or_waits(client: httpx.AsyncClient) -> None:
    conv = cid()
    first = await begin(client, conv)
    r = await client.post(f"/v1/conversations/{conv}/turns",
                          json={"content": "second", "on_busy": "fail"})  # fmt: skip
    problem(r, 409, "ConversationBusy")
    r = await client.post(f"/v1/conversations/{conv}/turns",
                          json={"content": "second", "timeout": 0.2})  # fmt: skip
    problem(r, 409, "ConversationBusy")
    got: list[httpx.Response] = []

    async def waiting() -> None:
        got.append(await client.post(f"/v1/conversations/{conv}/turns",
                                     json={"content": "third", "timeout": 30}))  # fmt: skip

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiting)
        await anyio.sleep(0.3)
        r = await client.post(f"/v1/turns/{first['turn_id']}/finish", headers=epoch(first))
        assert r.status_code == 200
    assert got[0].status_code == 201 and got[0].json()["status"] == "running"
    roles = [m["role"] for m in (await messages(client, conv))["messages"]]
    assert roles == ["user", "user"]  # the refused submits wrote nothing


async def test_bad_events_are_refused_with_nothing_written(client: httpx.AsyncClient) -> None:
    conv = cid()
    earlier = await begin(client, conv)
    final = {"content": "x", "tool_calls": [{"id": f"{conv}-old", "name": "f"}],
             "results": [{"call_id": f"{conv}-old", "content": "ok"}]}  # fmt: skip
    r = await client.post(f"/v1/turns/{earlier['turn_id']}/finish", headers=epoch(earlier),
                          json={"final": final})  # fmt: skip
    assert r.status_code == 200, r.text
    turn = await begin(client, conv, "next")
    ok = await events(client, turn, {"type": "text", "text": "t"},
                      {"type": "tool_call", "id": f"{conv}-a", "name": "f"}, seq=0)  # fmt: skip
    assert ok.status_code == 200
    before = (await client.get(f"/v1/turns/{turn['turn_id']}")).json()
    refused = [
        [{"type": "tool_result", "call_id": "unknown", "content": "x"}],  # no such call
        [{"type": "tool_result", "call_id": f"{conv}-a"},
         {"type": "tool_result", "call_id": f"{conv}-a"}],  # a second result
        [{"type": "tool_call", "id": f"{conv}-a", "name": "f"}],  # a duplicate call
        [{"type": "tool_call", "id": f"{conv}-old", "name": "f"}],  # an earlier turn's id
        [{"type": "text", "text": "ok"}, {"type": "text", "text": "nul \u0000"}],
        [{"type": "reasoning", "part": {"no": "format"}}],
        [{"type": "end_step"}],  # an unanswered call
    ]  # fmt: skip
    for evs in refused:
        problem(await events(client, turn, *evs, seq=2), 422, "InvalidMessage")
    problem(await events(client, turn, {"type": "bogus"}, seq=2), 422, "InvalidRequest")
    after = (await client.get(f"/v1/turns/{turn['turn_id']}")).json()
    assert after == before
    r = await events(client, turn, {"type": "end_step", "interrupt_unanswered": True}, seq=2)
    assert r.json()["committed"] == [1]
    history = await messages(client, conv)
    assert history["messages"][-1]["is_error"]
    assert history["messages"][-1]["content"] == [{"type": "text", "text": INTERRUPTED}]


async def test_seq_makes_event_retries_exact(client: httpx.AsyncClient) -> None:
    conv = cid()
    turn = await begin(client, conv)
    call = {"type": "tool_call", "id": f"{conv}-a", "name": "f"}
    first = await events(client, turn, {"type": "text", "text": "once"}, call, seq=0)
    again = await events(client, turn, {"type": "text", "text": "once"}, call, seq=0)
    assert again.json()["duplicate"] and again.json()["events"] == 2
    gap = problem(await events(client, turn, {"type": "text", "text": "x"}, seq=5), 409,
                  "EventGap")  # fmt: skip
    assert gap["events"] == 2
    # a retry overlapping what the server has: only the new tail is applied
    r = await events(client, turn, call, {"type": "tool_result", "call_id": f"{conv}-a"}, seq=1)
    assert r.json()["committed"] == [1] and r.json()["events"] == 3
    await client.post(f"/v1/turns/{turn['turn_id']}/finish", headers=epoch(turn))
    history = await messages(client, conv)
    assert history["messages"][1]["content"] == [{"type": "text", "text": "once"}]
    assert first.status_code == 200


async def test_the_whole_step_form(client: httpx.AsyncClient) -> None:
    conv = cid()
    turn = await begin(client, conv)
    url = f"/v1/turns/{turn['turn_id']}/steps"
    step = {"content": "two calls", "step": 1,
            "tool_calls": [{"id": f"{conv}-a", "name": "f", "arguments": {"x": 1}},
                           {"id": f"{conv}-b", "name": "f"}],
            "results": [{"call_id": f"{conv}-b", "content": "b"},
                        {"call_id": f"{conv}-a", "content": "a", "is_error": True}]}  # fmt: skip
    r = await client.post(url, json=step, headers=epoch(turn))
    assert r.status_code == 201 and r.json() == {"turn_id": turn["turn_id"], "step": 1,
                                                 "duplicate": False}  # fmt: skip
    r = await client.post(url, json=step, headers=epoch(turn))  # the reply was lost: again
    assert r.status_code == 200 and r.json()["duplicate"]
    problem(await client.post(url, json={**step, "content": "other"}, headers=epoch(turn)),
            409, "IntegrityViolation")  # fmt: skip
    problem(await client.post(url, json={**step, "step": 5}, headers=epoch(turn)), 409,
            "StepOutOfOrder")  # fmt: skip
    missing = {"content": "x", "tool_calls": [{"id": f"{conv}-c", "name": "f"}]}
    problem(await client.post(url, json=missing, headers=epoch(turn)), 422, "InvalidMessage")
    problem(await client.post(url, json=missing), 422, "InvalidRequest")  # no Turn-Epoch
    await events(client, turn, {"type": "text", "text": "open"})
    problem(await client.post(url, json={"content": "y"}, headers=epoch(turn)), 409,
            "OpenStepPending")  # fmt: skip
    await client.post(f"/v1/turns/{turn['turn_id']}/finish", headers=epoch(turn))
    history = await messages(client, conv)
    assert shape(history) == [("user", None, False), ("assistant", None, False),
                              ("tool", f"{conv}-a", True), ("tool", f"{conv}-b", False),
                              ("assistant", None, False)]  # fmt: skip


async def test_ends_are_idempotent_and_close_unanswered_calls(client: httpx.AsyncClient) -> None:
    conv = cid()
    turn = await begin(client, conv)
    tid = turn["turn_id"]
    await events(client, turn, {"type": "tool_call", "id": f"{conv}-a", "name": "f"},
                 {"type": "tool_call", "id": f"{conv}-b", "name": "f"},
                 {"type": "tool_result", "call_id": f"{conv}-a", "content": "ran"})  # fmt: skip
    hb = await client.post(f"/v1/turns/{tid}/heartbeat", headers=epoch(turn))
    assert hb.status_code == 200 and hb.json()["turn_id"] == tid
    problem(await client.post(f"/v1/turns/{tid}/heartbeat", headers={"Turn-Epoch": "999"}),
            409, "LeaseLost")  # fmt: skip
    first = await client.post(f"/v1/turns/{tid}/interrupt", json={"reason": "user stop"},
                              headers=epoch(turn))  # fmt: skip
    second = await client.post(f"/v1/turns/{tid}/interrupt", headers=epoch(turn))
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == "interrupted" and first.json()["error"] == "user stop"
    assert second.json() == first.json()
    problem(await client.post(f"/v1/turns/{tid}/finish", headers=epoch(turn)), 409,
            "TurnFinished")  # fmt: skip
    problem(await events(client, turn, {"type": "text", "text": "late"}), 409, "TurnFinished")
    assert shape(await messages(client, conv))[2:] == [("tool", f"{conv}-a", False),
                                                      ("tool", f"{conv}-b", True)]  # fmt: skip

    failing = await begin(client, conv, "again")
    r = await client.post(f"/v1/turns/{failing['turn_id']}/fail", json={"reason": "boom"},
                          headers=epoch(failing))  # fmt: skip
    assert r.json()["status"] == "failed" and r.json()["error"] == "boom"
    r = await client.post(f"/v1/turns/{failing['turn_id']}/fail", headers=epoch(failing))
    assert r.status_code == 200
    problem(await client.post("/v1/turns/turn_nope/finish", headers={"Turn-Epoch": "1"}), 404,
            "TurnNotFound")  # fmt: skip


async def test_turn_state_and_long_poll(client: httpx.AsyncClient) -> None:
    conv = cid()
    turn = await begin(client, conv)
    tid = turn["turn_id"]
    await events(client, turn, {"type": "text", "text": "thinking"})
    view = (await client.get(f"/v1/turns/{tid}")).json()
    assert view["status"] == "running" and not view["ended"]
    assert view["open_step"] == {"step": 1, "calls": [], "unanswered": [], "parts": 1}
    r = await client.get(f"/v1/turns/{tid}/wait", params={"timeout": 0.2})
    assert r.status_code == 200 and not r.json()["ended"]
    got: list[httpx.Response] = []

    async def poll() -> None:
        got.append(await client.get(f"/v1/turns/{tid}/wait", params={"timeout": 30}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        await anyio.sleep(0.2)
        await client.post(f"/v1/turns/{tid}/finish", headers=epoch(turn))
    assert got[0].json()["ended"] and got[0].json()["status"] == "finished"
    assert got[0].json()["steps"] == 1  # the open step was committed by the finish
    problem(await client.get("/v1/turns/turn_nope"), 404, "TurnNotFound")


async def test_usage_over_http(client: httpx.AsyncClient) -> None:
    conv = cid()
    turn = await begin(client, conv)
    url = f"/v1/turns/{turn['turn_id']}/usage"
    report = {"prompt_tokens": 10, "completion_tokens": 2, "cache_creation_tokens": 5,
              "cost_usd": 0.1, "model": "m-1"}  # fmt: skip
    first = await client.post(url, json=report, headers={**epoch(turn), "Idempotency-Key": "u1"})
    again = await client.post(url, json=report, headers={**epoch(turn), "Idempotency-Key": "u1"})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["duplicate"]
    await client.post(url, json={"prompt_tokens": 1, "cost_usd": 0.2, "step": 1},
                      headers=epoch(turn))  # fmt: skip
    problem(await client.post(url, json={"prompt_tokens": -1}, headers=epoch(turn)), 422,
            "InvalidRequest")  # fmt: skip
    problem(await client.post(url, json={"step": 3}, headers=epoch(turn)), 422, "InvalidMessage")
    got = (await client.get(url)).json()
    assert [r["seq"] for r in got["reports"]] == [1, 2]
    assert got["total"]["prompt_tokens"] == 11
    assert got["total"]["cost_usd"] == pytest.approx(0.3) and str(got["total"]["cost_usd"]) == "0.3"


async def test_replay_for_every_provider(client: httpx.AsyncClient) -> None:
    conv = cid()
    turn = await begin(client, conv)
    await events(client, turn, {"type": "tool_call", "id": f"{conv}-a", "name": "f"},
                 {"type": "tool_result", "call_id": f"{conv}-a", "content": "ok"})  # fmt: skip
    await client.post(f"/v1/turns/{turn['turn_id']}/finish", headers=epoch(turn),
                      json={"final": {"content": "done"}})  # fmt: skip
    for provider in ("openai-chat", "openai-responses", "anthropic", "gemini"):
        r = await client.get(f"/v1/conversations/{conv}/replay",
                             params={"provider": provider, "system": "be brief"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["provider"] == provider and r.json()["repairs"] == []
        assert r.json()["body"]
    problem(await client.get(f"/v1/conversations/{conv}/replay", params={"provider": "x"}),
            422, "InvalidRequest")  # fmt: skip
    unknown = await client.get(f"/v1/conversations/{cid()}/replay",
                               params={"provider": "anthropic"})  # fmt: skip
    problem(unknown, 404, "ConversationNotFound")


async def test_erasure(client: httpx.AsyncClient) -> None:
    conv = cid()
    turn = await begin(client, conv)
    await client.post(f"/v1/turns/{turn['turn_id']}/usage", json={"prompt_tokens": 3},
                      headers=epoch(turn))  # fmt: skip
    problem(await client.delete(f"/v1/conversations/{conv}"), 409, "ConversationInUse")
    await client.post(f"/v1/turns/{turn['turn_id']}/finish", headers=epoch(turn))
    r = await client.delete(f"/v1/conversations/{conv}")
    assert r.status_code == 200 and r.json()["existed"] and r.json()["messages"] == 1
    problem(await client.get(f"/v1/conversations/{conv}/messages"), 404, "ConversationNotFound")
    again = await client.delete(f"/v1/conversations/{conv}")
    assert again.status_code == 200 and not again.json()["existed"]


async def test_malformed_bodies_are_refused(client: httpx.AsyncClient) -> None:
    conv = cid()
    url = f"/v1/conversations/{conv}/turns"
    for body in (b'{"content": NaN}', b'{"content": "\\ud800"}', b"[" * 5000, b"{"):
        r = await client.post(url, content=body, headers={"content-type": "application/json"})
        problem(r, 422, "InvalidRequest")
    problem(await client.post(url, json={"content": []}), 422, "InvalidMessage")
    problem(await client.post(url, json={"content": [{"type": "video"}]}), 422, "InvalidMessage")
    problem(await client.get(f"/v1/conversations/{conv}/messages"), 404, "ConversationNotFound")


# --- limits ---------------------------------------------------------------------------------


def _images(n: int, size: int) -> list[dict[str, Any]]:
    data = "A" * size  # base64 text of 2 MB
    return [{"type": "text", "text": "these"}] + [
        {"type": "image", "mime_type": "image/png", "data": data} for _ in range(n)
    ]


def _begin_sync(c: httpx.Client, conversation: str, content: Any) -> httpx.Response:
    return c.post(f"/v1/conversations/{conversation}/turns", json={"content": content})


@pytest.mark.parametrize("kind", BACKENDS)
def test_eight_images_of_2mb_when_allowed_and_413_above(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        on_postgres(request)
    mb = 2_000_000
    with database(kind, tmp_path) as db:
        with (
            serving(db, tmp_path / "default.log") as default,
            httpx.Client(base_url=default.url, timeout=60) as c,
        ):
            problem(_begin_sync(c, "c", _images(8, mb)), 413, "RequestTooLarge")
            problem(_begin_sync(c, "c", _images(3, mb)), 413, "MessageTooLarge")
            problem(c.get("/v1/conversations/c/messages"), 404, "ConversationNotFound")
        args = ("--max-message-bytes", "17MB", "--max-request-bytes", "18MB")
        with (
            serving(db, tmp_path / "big.log", *args) as big,
            httpx.Client(base_url=big.url, timeout=60) as c,
        ):
            r = _begin_sync(c, "c", _images(8, mb))
            assert r.status_code == 201 and r.json()["status"] == "running"
            problem(_begin_sync(c, "d", _images(9, mb)), 413, "RequestTooLarge")
            stored = c.get("/v1/conversations/c/messages").json()["messages"]
            assert len(stored) == 1 and len(stored[0]["content"]) == 9
            assert all(len(p.get("data", "")) in (0, mb) for p in stored[0]["content"])
            problem(c.get("/v1/conversations/d/messages"), 404, "ConversationNotFound")


def test_a_client_that_trickles_its_body_gets_408(tmp_path: Path) -> None:
    import socket

    with (
        database("sqlite", tmp_path) as db,
        serving(db, tmp_path / "s.log", "--body-timeout", "0.5") as server,
    ):
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/conversations/c/turns HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                b'{"content": '
            )
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        with httpx.Client(base_url=server.url) as c:
            problem(c.get("/v1/conversations/c/messages"), 404, "ConversationNotFound")
