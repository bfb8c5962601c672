"""Who may do what: bearer tokens bound to tenants (another tenant's conversation or turn
is a 404, never its data), 401 without a valid token, no service without tokens on a
non-loopback address, and an access log at INFO without tokens, ids or message text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from store.server.auth import Authenticator, TokenError, load_tokens

from .conftest import BACKENDS, on_postgres
from .http_server import ROOT, database, problem, serving

TOKEN_A = "tok-acme-0123456789abcdef"
TOKEN_B = "tok-beta-0123456789abcdef"
SECRET_TEXT = "my secret prompt text"


def _tokens(tmp: Path) -> Path:
    path = tmp / "tokens"
    path.write_text(f"# tenant token\nacme {TOKEN_A}\nbeta {TOKEN_B}  # the second\n")
    path.chmod(0o600)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
def test_a_token_sees_only_its_tenant_s_conversations(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        on_postgres(request)
    tokens = str(_tokens(tmp_path))
    with (
        database(kind, tmp_path) as db,
        serving(db, tmp_path / "s.log", "--tokens", tokens) as server,
    ):
        a = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN_A}"})
        b = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN_B}"})
        anonymous = httpx.Client(base_url=server.url)
        with a, b, anonymous:
            r = a.post("/v1/conversations/shared-name/turns", json={"content": SECRET_TEXT})
            assert r.status_code == 201
            turn = r.json()
            tid, epoch = turn["turn_id"], {"Turn-Epoch": str(turn["epoch"])}
            a.post(f"/v1/turns/{tid}/events", headers=epoch,
                       json={"events": [{"type": "text", "text": "step"}]})  # fmt: skip

            # beta: the same conversation id is its own, empty; alpha's turn is not there
            problem(b.get("/v1/conversations/shared-name/messages"), 404,
                        "ConversationNotFound")  # fmt: skip
            replay = b.get("/v1/conversations/shared-name/replay",
                               params={"provider": "anthropic"})  # fmt: skip
            problem(replay, 404, "ConversationNotFound")
            problem(b.get(f"/v1/turns/{tid}"), 404, "TurnNotFound")
            problem(b.get(f"/v1/turns/{tid}/wait", params={"timeout": 0}), 404, "TurnNotFound")
            problem(b.get(f"/v1/turns/{tid}/usage"), 404, "TurnNotFound")
            for action in ("events", "steps", "finish", "fail", "interrupt", "heartbeat",
                               "usage"):  # fmt: skip
                body = {"events": [{"type": "text", "text": "x"}]} if action == "events" else {}
                problem(b.post(f"/v1/turns/{tid}/{action}", json=body, headers=epoch), 404,
                            "TurnNotFound")  # fmt: skip
            erased = b.delete("/v1/conversations/shared-name")
            assert erased.status_code == 200 and not erased.json()["existed"]
            # beta's own conversation of that name is apart from alpha's
            r = b.post("/v1/conversations/shared-name/turns", json={"content": "beta's"})
            assert r.status_code == 201  # not busy: alpha's turn runs on another one

            history = a.get("/v1/conversations/shared-name/messages").json()
            assert history["conversation_id"] == "shared-name"
            assert history["messages"][0]["content"][0]["text"] == SECRET_TEXT
            assert a.get(f"/v1/turns/{tid}").json()["conversation_id"] == "shared-name"

            for client, header in ((anonymous, None), (a, "Bearer wrong-token-000000000"),
                                       (a, f"Basic {TOKEN_A}")):  # fmt: skip
                headers = {"Authorization": header} if header else {}
                r = client.get("/v1/conversations/shared-name/messages", headers=headers)
                problem(r, 401, "Unauthorized")
                assert r.headers["www-authenticate"] == "Bearer"
            assert anonymous.get("/v1/health").status_code == 200
            doc = anonymous.get("/openapi.json").json()
            assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        log = server.log()
    access = [line for line in log.splitlines() if "turnstore.http.access" in line]
    assert len(access) > 10
    for secret in (TOKEN_A, TOKEN_B, "shared-name", SECRET_TEXT, tid):
        assert secret not in log


def test_without_tokens_only_loopback(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "store", "serve", "--db", f"sqlite:///{tmp_path / 'x.db'}",
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "refusing to serve on 0.0.0.0 without --tokens" in run.stderr
    assert not (tmp_path / "x.db").exists()


def test_token_files_are_checked(tmp_path: Path) -> None:
    entries = load_tokens(_tokens(tmp_path))
    assert [tenant for _, tenant in entries] == ["acme", "beta"]
    auth = Authenticator(entries)
    assert auth.tenant_of(f"Bearer {TOKEN_B}").name == "beta"
    for bad in ("acme", "acme short", "a/b tok-0123456789abcdef", f"x {TOKEN_A}\ny {TOKEN_A}", ""):
        path = tmp_path / "bad"
        path.write_text(bad)
        with pytest.raises(TokenError):
            load_tokens(path)
