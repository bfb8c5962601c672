"""Several OS processes on one database: one turn per key, dense positions, no
interleaving; and a process killed mid-step loses none of its completed tool results."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from store import StoreConfig
from store.messages import INTERRUPTED

from .conftest import Target
from .helpers import assert_clean

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus

WORKER = str(Path(__file__).with_name("proc_worker.py"))
ROOT = str(Path(__file__).parents[1])


def _args(target: Target, *rest: object) -> list[str]:
    return [sys.executable, WORKER, rest[0], target.url, target.schema or "-", *map(str, rest[1:])]


async def test_four_processes_double_submitting(target: Target) -> None:
    store = await target.open()  # migrate once, up front
    try:
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                for worker in range(4):
                    tg.start_soon(
                        lambda w=worker: anyio.run_process(
                            _args(target, "run", w, 12, 5),
                            check=True,
                            cwd=ROOT,
                            stdout=None,
                            stderr=None,
                        )
                    )
        await assert_clean(store)
        keys: dict[tuple[str, str], int] = {}
        for cid in (f"c{i}" for i in range(5)):
            history = await store.history(cid)
            assert [m.position for m in history] == list(range(len(history)))
            for m in history:
                if m.role == "user":
                    keys[(cid, m.text)] = keys.get((cid, m.text), 0) + 1
        assert keys and all(n == 1 for n in keys.values()), "a submit made two turns"
    finally:
        await store.close()


async def test_a_killed_process_loses_no_completed_tool_result(target: Target) -> None:
    store = await target.open(config=StoreConfig(lease_seconds=0.5, poll_max_seconds=0.02))
    try:
        async with await anyio.open_process(_args(target, "crash", "c"), cwd=ROOT) as proc:
            assert proc.stdout is not None
            line = b""
            with anyio.fail_after(30):
                async for chunk in proc.stdout:
                    line += chunk
                    if line.endswith(b"\n"):
                        break
            assert line.strip() == b"checkpointed"
            proc.kill()  # SIGKILL: no cleanup, no commit, no goodbye
            await proc.wait()
        with anyio.fail_after(10):
            successor = await store.begin_turn("c", "continue")
        history = await store.history("c")
        assert [(m.role, m.tool_call_id, m.is_error, m.text) for m in history] == [
            ("user", None, False, "build the page"),
            ("assistant", None, False, "inserting two sections"),
            ("tool", "call_a", False, "inserted a"),
            ("tool", "call_b", True, INTERRUPTED),
            ("user", None, False, "continue"),
        ]
        await successor.finish()
        await assert_clean(store)
    finally:
        await store.close()
