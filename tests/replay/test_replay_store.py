"""History written through the store replays with zero repairs for every provider, on both
backends; windows never cut a step; the CLI reads the store's own database."""

from __future__ import annotations

import io
import json

import anyio
import anyio.lowlevel
import pytest

from store import AssistantMessage, Store, ToolCall, ToolResult
from store.replay import PROVIDERS, build_request
from store.replay.cli import run_replay
from store.replay.readers import from_stored_messages

from ..conftest import Target
from .rules import CHECKERS, pair_counts

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus


async def _write_conversation(store: Store) -> None:
    for t in range(3):
        turn = await store.begin_turn("c", f"prompt {t}")
        await turn.commit_step(
            AssistantMessage(
                [
                    {"type": "reasoning", "format": "deepseek", "text": "thinking"},
                    {"type": "text", "text": "two tools"},
                ],
                [
                    ToolCall(f"t{t}a", "insertHtml", {"html": "<p>"}),
                    ToolCall(f"t{t}b", "read", {}, provider_data={"thought_signature": "sig"}),
                ],
            ),
            [ToolResult(f"t{t}a", "ok"), ToolResult(f"t{t}b", "boom", is_error=True)],
        )
        with anyio.CancelScope() as scope:  # an interrupted step: one result, one closed
            async with turn.step() as step:
                step.tool_call(f"t{t}c", "insertHtml", {"n": t})
                step.tool_call(f"t{t}d", "insertHtml", {"n": t})
                step.tool_result(f"t{t}c", "done")
                scope.cancel()
                await anyio.lowlevel.checkpoint()
    last = await store.begin_turn("c", "and now?")
    await last.finish("all done")


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_store_history_replays_with_no_pairing_repair(store: Store, provider: str) -> None:
    await _write_conversation(store)
    messages = from_stored_messages(await store.history("c"))
    body, repairs = build_request(messages, provider)
    assert {r.kind for r in repairs} <= {"foreign_reasoning"}  # the others' reasoning
    assert CHECKERS[provider](body) == []
    assert pair_counts(provider, body) == (12, 12)
    for last in range(1, 20):
        window = from_stored_messages(await store.history("c", last=last))
        body, repairs = build_request(window, provider)
        assert CHECKERS[provider](body) == [], last
        # a window starts on a user message: never a pairing repair, nothing dropped
        # but the other providers' reasoning
        assert {r.kind for r in repairs} <= {"foreign_reasoning"}, last


async def test_cli_reads_the_store_database(store: Store, target: Target) -> None:
    await _write_conversation(store)
    schema = ["--schema", target.schema] if target.schema else []
    out, err = io.StringIO(), io.StringIO()
    argv = ["--provider", "openai-chat", "--db", target.url, "--conversation", "c", *schema]
    code = await anyio.to_thread.run_sync(lambda: run_replay(argv, stdout=out, stderr=err))
    assert (code, err.getvalue()) == (0, "")
    body = json.loads(out.getvalue())
    assert body.pop("repairs") == []
    assert CHECKERS["openai-chat"](body) == []
    windowed = io.StringIO()
    code = await anyio.to_thread.run_sync(
        lambda: run_replay([*argv, "--last", "3"], stdout=windowed, stderr=err)
    )
    assert code == 0
    assert json.loads(windowed.getvalue())["messages"][0]["role"] == "user"


async def test_cli_refuses_a_missing_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    err = io.StringIO()
    url = f"sqlite+aiosqlite:///{tmp_path / 'nothing.db'}"
    code = await anyio.to_thread.run_sync(
        lambda: run_replay(
            ["--provider", "gemini", "--db", url, "--conversation", "c"],
            stdout=io.StringIO(),
            stderr=err,
        )
    )
    assert code == 2 and "no SQLite database" in err.getvalue()
    assert not (tmp_path / "nothing.db").exists()
