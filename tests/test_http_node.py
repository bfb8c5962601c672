"""The JavaScript client of docs/http.md, run with Node against a live service on both
databases: one turn with two parallel tool calls, as the runtime of the bug report persists
it (text, call, call, result, result, usage, finish)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import BACKENDS, on_postgres
from .http_server import ROOT, database, serving

pytestmark = pytest.mark.slow
CLIENT = ROOT / "docs" / "http" / "client.mjs"


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_javascript_client_runs_a_turn(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js (20 or later) is needed for this test"
    if kind == "postgres":
        on_postgres(request)
    with database(kind, tmp_path) as db, serving(db, tmp_path / "s.log") as server:
        run = subprocess.run([node, str(CLIENT), server.url, "conv-js"], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["status"] == "finished" and out["steps"] == 2
        assert out["roles"] == ["user", "assistant", "tool", "tool", "assistant"]
        assert out["usage"]["prompt_tokens"] == 1834 and out["usage"]["cost_usd"] == 0.0061
        messages = httpx.get(f"{server.url}/v1/conversations/conv-js/messages").json()["messages"]
        step = messages[1]
        assert [c["id"] for c in step["tool_calls"]] == ["call_hero", "call_menu"]
        assert [m["tool_call_id"] for m in messages[2:4]] == ["call_hero", "call_menu"]
        assert not any(m["is_error"] for m in messages)
        for provider in ("openai-responses", "anthropic"):
            replay = httpx.get(f"{server.url}/v1/conversations/conv-js/replay",
                               params={"provider": provider}).json()  # fmt: skip
            assert replay["repairs"] == []
