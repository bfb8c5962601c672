"""``python -m store soak``: short real runs (worker processes, real faults), what it
refuses, and that its verdict finds what it is there to find (a lost acknowledged step, a
lost checkpointed result, a body that does not pair)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from store import AssistantMessage, Store, ToolCall, ToolResult
from store.replay import PROVIDERS
from store.soak import pairing
from store.soak.pgserver import free_port
from store.soak.verify import verify

from .conftest import PG_URL, on_postgres

ROOT = str(Path(__file__).parents[1])


def _soak(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m store soak`` to its end; on a hang, SIGTERM it (it stops its
    workers and removes its server), then SIGKILL."""
    command = [sys.executable, "-m", "store", "soak", *args]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            pytest.fail(f"the soak did not end within {timeout}s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _clean_run(done: subprocess.CompletedProcess[str], path: Path, faults: list[str]) -> None:
    assert path.exists(), f"no JSON written (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(path.read_text())
    report = f"\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert result["violations"] == 0, f"violations {result['violations_by_kind']}{report}"
    assert result["lost_acknowledged_steps"] == 0, report
    assert result["lost_checkpointed_results"] == 0, report
    assert result["stuck_conversations"] == 0, report
    assert result["unexpected_errors"] == 0, report
    assert result["turns"] > 0 and result["steps"] > 0, report
    assert set(result["faults"]) == set(faults), report
    assert all(result["faults"][kind] > 0 for kind in faults), f"faults {result['faults']}"
    for key in ("recoveries", "recovered_results", "duplicates", "outcome_unknown"):
        assert isinstance(result[key], int)
    assert done.returncode == 0, report
    _nothing_left(done.stdout, result["url"])


def _nothing_left(output: str, url: str) -> None:
    """No worker of the run (its log directory, named on the first line) and no server
    of its own (its port) is left running."""
    logs = output.splitlines()[0].rsplit(" logs ", 1)[-1]
    port = url.rsplit(":", 1)[-1].split("/")[0]
    leftovers = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if logs in cmdline or ("turnstore-pg-" in cmdline and f"-p {port} " in cmdline):
            leftovers.append(cmdline)
    assert leftovers == []


@pytest.mark.slow
def test_soak_on_sqlite_with_kills_and_stops(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = _soak(
        "--db", f"sqlite+aiosqlite:///{tmp_path / 'soak.db'}", "--duration", "8",
        "--workers", "3", "--faults", "kill,stop", "--seed", "3", "--json", str(out),
    )  # fmt: skip
    _clean_run(done, out, ["kill", "stop"])


@pytest.mark.slow
def test_soak_on_its_own_postgres_with_every_fault(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    on_postgres(request)
    out = tmp_path / "soak.json"
    done = _soak(
        "--own-server", "--duration", "15", "--workers", "4",
        "--faults", "kill,stop,terminate,restart", "--seed", "5", "--json", str(out),
    )  # fmt: skip
    _clean_run(done, out, ["kill", "stop", "terminate", "restart"])
    assert json.loads(out.read_text())["backend"] == "postgresql (own server)"


def _refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert done.stdout == ""


def test_soak_refuses_to_restart_a_server_it_did_not_start() -> None:
    url = PG_URL if PG_URL != "skip" else "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    _refused(_soak("--db", url, "--faults", "restart", "--duration", "5"), "restart", "refus")
    _refused(_soak("--db", url, "--faults", "kill,restart"), "restart")


def test_soak_refuses_server_faults_on_sqlite_and_bad_targets(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    _refused(_soak("--db", db, "--faults", "terminate"), "terminate", "SQLite")
    _refused(_soak("--db", db, "--faults", "kill,restart"), "restart", "SQLite")
    _refused(_soak("--db", "not a url"), "not a database URL")
    _refused(_soak("--db", "mysql://u@h/d"), "unsupported")
    _refused(_soak("--db", "sqlite+aiosqlite:///:memory:"), "file")
    _refused(_soak("--faults", "kill,explode"), "explode")
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none"
    _refused(_soak("--db", unreachable, "--faults", "kill"), "cannot reach")
    assert not (tmp_path / "x.db").exists()


def test_soak_is_listed_in_the_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "store", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "soak" in done.stdout


# --- the verdict finds what it is there to find ---------------------------------------


async def test_the_verdict_finds_lost_and_changed_writes(tmp_path: Path) -> None:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'v.db'}") as store:
        turn = await store.begin_turn("c0", "soak prompt k1", idempotency_key="k1")
        calls = [ToolCall("a", "tool", {}), ToolCall("b", "tool", {})]
        number = await turn.commit_step(
            AssistantMessage("step one", calls), [ToolResult("a", "ra"), ToolResult("b", "rb")]
        )
        await turn.finish()
        claim = {"t": "claim", "turn": turn.id, "cid": "c0", "key": "k1", "dup": False}
        good = {
            "t": "step", "turn": turn.id, "cid": "c0", "step": number, "text": "step one",
            "results": [
                {"id": "a", "content": "ra", "error": False},
                {"id": "b", "content": "rb", "error": False},
            ],
        }  # fmt: skip
        ckpt = {"t": "ckpt", "turn": turn.id, "cid": "c0", "call": "a", "content": "ra"}
        clean = await verify(
            store, [claim, good, {**ckpt, "error": False}, {"t": "finish", "turn": turn.id}],
            ["c0", "c1"], 0.5,
        )  # fmt: skip
        assert clean.violations == [], clean.violations
        assert clean.replays == 2 * len(PROVIDERS)

        lost = {**good, "step": number + 1}
        changed = {**good, "text": "another text"}
        lost_ckpt = {**ckpt, "call": "zz", "error": False}
        changed_ckpt = {**ckpt, "content": "other", "error": False}
        twice = {**claim, "turn": "turn_other"}
        bad = await verify(
            store, [claim, twice, lost, changed, lost_ckpt, changed_ckpt], ["c0"], 0.5
        )
        kinds = sorted(v["kind"] for v in bad.violations)
        assert bad.lost_acknowledged_steps == 1
        assert bad.changed_acknowledged_steps == 1
        assert bad.lost_checkpointed_results == 2
        assert "key_split" in kinds and "claimed_prompt_not_kept" in kinds, kinds


async def test_the_verdict_finds_a_stuck_conversation(tmp_path: Path) -> None:
    async with Store.open(f"sqlite+aiosqlite:///{tmp_path / 'v.db'}") as store:
        holder = await store.begin_turn("c0", "hold it")  # a 30 s lease, never ended
        await holder.commit_step(AssistantMessage("working"))
        verdict = await verify(store, [], ["c0"], 0.5, margin=0.5)
        assert verdict.stuck_conversations == 1
        assert [v["kind"] for v in verdict.violations] == ["stuck_conversation"]


def _bodies(path: Path) -> dict[str, dict[str, Any]]:
    """One body per provider, for a history of two steps, made by the store."""

    async def make() -> dict[str, dict[str, Any]]:
        async with Store.open(f"sqlite+aiosqlite:///{path}") as store:
            turn = await store.begin_turn("c", "hello")
            await turn.commit_step(
                AssistantMessage("two calls", [ToolCall("a", "t", {}), ToolCall("b", "t", {})]),
                [ToolResult("a", "ra"), ToolResult("b", "rb", is_error=True)],
            )
            await turn.finish("done")
            return {p: (await store.replay("c", p))[0] for p in PROVIDERS}

    return anyio.run(make)


def test_the_pairing_check_passes_good_bodies_and_catches_orphans(tmp_path: Path) -> None:
    bodies = _bodies(tmp_path / "p.db")
    assert set(bodies) == set(pairing.CHECKS)
    for provider, body in bodies.items():
        assert pairing.check(provider, body) == [], provider
    # drop one result: a call goes unanswered
    chat = json.loads(json.dumps(bodies["openai-chat"]))
    del chat["messages"][3]
    assert pairing.check("openai-chat", chat)
    responses = json.loads(json.dumps(bodies["openai-responses"]))
    responses["input"] = [i for i in responses["input"] if i.get("call_id") != "b" or
                          i["type"] != "function_call_output"]  # fmt: skip
    assert pairing.check("openai-responses", responses)
    anthropic = json.loads(json.dumps(bodies["anthropic"]))
    anthropic["messages"][2]["content"].pop()
    assert pairing.check("anthropic", anthropic)
    gemini = json.loads(json.dumps(bodies["gemini"]))
    gemini["contents"][2]["parts"].pop()
    assert pairing.check("gemini", gemini)
    # a result before its call: an orphan
    orphan = json.loads(json.dumps(bodies["openai-chat"]))
    orphan["messages"].insert(1, {"role": "tool", "tool_call_id": "x", "content": "?"})
    assert pairing.check("openai-chat", orphan)
