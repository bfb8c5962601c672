"""The HTTP service under concurrency and failure, on both databases: double submits from
several client processes at once (one turn and one user message per key, the checker
clean), and the service SIGKILLed in the middle of a step (every acknowledged event is
there after a restart; a turn whose client is gone too is taken over after its lease, its
acknowledged results committed, its unanswered call closed as interrupted)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.messages import INTERRUPTED

from .conftest import BACKENDS, on_postgres
from .http_server import ROOT, Database, database, serving

pytestmark = pytest.mark.slow

WORKERS, CONVERSATIONS, KEYS = 4, 3, 6


def _check(db: Database) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "store", "check", *db.args(), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("kind", BACKENDS)
def test_double_submits_from_several_processes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        on_postgres(request)
    with database(kind, tmp_path) as db:
        with serving(db, tmp_path / "server.log") as server:
            outs = [tmp_path / f"worker{n}.jsonl" for n in range(WORKERS)]
            workers = [
                subprocess.Popen([sys.executable, str(ROOT / "tests" / "http_client_worker.py"),
                                  server.url, str(n), str(CONVERSATIONS), str(KEYS), str(out)])
                for n, out in enumerate(outs)
            ]  # fmt: skip
            try:
                codes = [w.wait(timeout=240) for w in workers]
            finally:
                for w in workers:
                    if w.poll() is None:
                        w.kill()
            assert codes == [0] * WORKERS, server.log()[-3000:]
            records = [json.loads(line) for out in outs for line in out.read_text().splitlines()]
            by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for record in records:
                by_key[record["key"]].append(record)
            assert len(by_key) == CONVERSATIONS * KEYS
            for key, submits in by_key.items():
                assert len(submits) == WORKERS
                assert len({s["turn_id"] for s in submits}) == 1, key  # one turn per key
                assert sum(not s["duplicate"] for s in submits) == 1, key  # one driver
                assert {s["status"] for s in submits} == {"finished"}, key
            with httpx.Client(base_url=server.url) as c:
                for n in range(CONVERSATIONS):
                    history = c.get(f"/v1/conversations/c{n}/messages").json()
                    users = [m for m in history["messages"] if m["role"] == "user"]
                    assert len(users) == KEYS  # one user message per key, not per submit
                    tools = [m for m in history["messages"] if m["role"] == "tool"]
                    assert len(tools) == 2 * KEYS and not any(m["is_error"] for m in tools)
                    assert history["usage"]["conversation"]["reports"] == KEYS
        report = _check(db)
        assert report.returncode == 0, report.stdout + report.stderr
        assert json.loads(report.stdout)["violations"] == []


def _turn(c: httpx.Client, conversation: str, content: str = "go") -> dict[str, Any]:
    r = c.post(f"/v1/conversations/{conversation}/turns", json={"content": content,
                                                                "timeout": 30})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _events(c: httpx.Client, turn: dict[str, Any], seq: int, *events: dict[str, Any]) -> Any:
    r = c.post(f"/v1/turns/{turn['turn_id']}/events", json={"seq": seq, "events": list(events)},
               headers={"Turn-Epoch": str(turn["epoch"])})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


MID_STEP = (
    {"type": "text", "text": "Adding both sections."},
    {"type": "tool_call", "id": "call_a", "name": "insertHtml", "arguments": {"n": 1}},
    {"type": "tool_call", "id": "call_b", "name": "insertHtml", "arguments": {"n": 2}},
    {"type": "tool_result", "call_id": "call_a", "content": "hero inserted"},
)


@pytest.mark.parametrize("kind", BACKENDS)
def test_killed_mid_step_then_restarted_the_client_goes_on(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        on_postgres(request)
    with database(kind, tmp_path) as db:
        first = serving(db, tmp_path / "first.log")
        server = first.__enter__()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            turn = _turn(c, "conv")
            for seq, event in enumerate(MID_STEP):  # each acknowledged
                _events(c, turn, seq, event)
        server.kill()  # SIGKILL, in the middle of the step
        first.__exit__(None, None, None)
        with (
            serving(db, tmp_path / "second.log") as again,
            httpx.Client(base_url=again.url, timeout=30) as c,
        ):
            view = c.get(f"/v1/turns/{turn['turn_id']}").json()
            assert view["status"] == "running"
            assert view["open_step"] == {"step": 1, "calls": ["call_a", "call_b"],
                                         "unanswered": ["call_b"], "parts": 1}  # fmt: skip
            # the client retries its last acknowledged event (a lost reply): recognised
            assert _events(c, turn, 3, MID_STEP[3])["duplicate"]
            ack = _events(c, turn, 4, {"type": "tool_result", "call_id": "call_b",
                                       "content": "menu inserted"})  # fmt: skip
            assert ack["committed"] == [1]
            r = c.post(f"/v1/turns/{turn['turn_id']}/finish",
                       headers={"Turn-Epoch": str(turn["epoch"])})  # fmt: skip
            assert r.json()["status"] == "finished"
            history = c.get("/v1/conversations/conv/messages").json()["messages"]
            assert [(m["role"], m["tool_call_id"], m["is_error"]) for m in history] == [
                ("user", None, False), ("assistant", None, False),
                ("tool", "call_a", False), ("tool", "call_b", False),
            ]  # fmt: skip
            assert history[1]["content"] == [{"type": "text", "text": MID_STEP[0]["text"]}]
            assert history[2]["content"] == [{"type": "text", "text": "hero inserted"}]
        assert _check(db).returncode == 0


@pytest.mark.parametrize("kind", BACKENDS)
def test_killed_mid_step_with_its_client_gone_the_turn_is_taken_over_after_its_lease(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        on_postgres(request)
    lease = 2.0
    args = ("--lease-seconds", str(lease))
    with database(kind, tmp_path) as db:
        first = serving(db, tmp_path / "first.log", *args)
        server = first.__enter__()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            turn = _turn(c, "conv")
            for seq, event in enumerate(MID_STEP):
                _events(c, turn, seq, event)
            acknowledged_at = time.monotonic()
        server.kill()
        first.__exit__(None, None, None)
        with (
            serving(db, tmp_path / "second.log", *args) as again,
            httpx.Client(base_url=again.url, timeout=30) as c,
        ):
            # before the lease expires the conversation is still the old turn's
            if time.monotonic() - acknowledged_at < lease - 0.5:
                r = c.post("/v1/conversations/conv/turns",
                           json={"content": "early", "on_busy": "fail"})  # fmt: skip
                assert r.status_code == 409 and r.json()["error"] == "ConversationBusy"
            nxt = _turn(c, "conv", "next question")  # waits for the lease, then takes over
            assert nxt["status"] == "running"
            old = c.get(f"/v1/turns/{turn['turn_id']}").json()
            assert old["status"] == "expired" and old["steps"] == 1
            history = c.get("/v1/conversations/conv/messages").json()["messages"]
            assert [(m["role"], m["tool_call_id"], m["is_error"]) for m in history] == [
                ("user", None, False), ("assistant", None, False),
                ("tool", "call_a", False), ("tool", "call_b", True), ("user", None, False),
            ]  # fmt: skip
            assert history[2]["content"] == [{"type": "text", "text": "hero inserted"}]
            assert history[3]["content"] == [{"type": "text", "text": INTERRUPTED}]
            # the old handle's writes are refused now
            r = c.post(f"/v1/turns/{turn['turn_id']}/events",
                       json={"seq": 4, "events": [{"type": "tool_result", "call_id": "call_b"}]},
                       headers={"Turn-Epoch": str(turn["epoch"])})  # fmt: skip
            assert r.status_code == 409 and r.json()["error"] == "LeaseLost"
        assert _check(db).returncode == 0
