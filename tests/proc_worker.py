"""A separate OS process that drives the store, for the multi-process tests.

python tests/proc_worker.py run URL SCHEMA WORKER TURNS CONVERSATIONS
python tests/proc_worker.py crash URL SCHEMA CONVERSATION
"""

from __future__ import annotations

import os
import random
import sys

import anyio

from store import AssistantMessage, Store, StoreConfig, ToolCall, ToolResult


async def run(url: str, schema: str | None, worker: int, turns: int, conversations: int) -> None:
    config = StoreConfig(busy_timeout=120, poll_max_seconds=0.02)
    async with Store.open(url, schema=schema, config=config) as store:
        rng = random.Random(worker)

        async def one(task: int) -> None:
            for n in range(turns):
                # the same (conversation, key) pairs are submitted by every process
                i = rng.randrange(turns * 2)
                cid = f"c{i % conversations}"
                turn = await store.begin_turn(cid, f"prompt {i}", idempotency_key=f"k{i}")
                if turn.duplicate:
                    continue
                for s in range(rng.randint(1, 2)):
                    calls = [ToolCall(f"{turn.id}_{s}_{k}", "t", {"k": k}) for k in range(3)]
                    await turn.commit_step(
                        AssistantMessage(f"w{worker} t{task} n{n}", calls),
                        [ToolResult(c.id, "ok") for c in calls],
                    )
                await turn.finish()

        async with anyio.create_task_group() as tg:
            for task in range(4):
                tg.start_soon(one, task)


async def crash(url: str, schema: str | None, conversation: str) -> None:
    config = StoreConfig(lease_seconds=0.5)
    store = await Store.open(url, schema=schema, config=config)
    turn = await store.begin_turn(conversation, "build the page")
    s = turn.step()
    s.text("inserting two sections")
    s.tool_call("call_a", "insertHtml", {"html": "<section>a</section>"})
    s.tool_call("call_b", "insertHtml", {"html": "<section>b</section>"})
    s.tool_result("call_a", "inserted a")
    await s.checkpoint()
    print("checkpointed", flush=True)
    await anyio.sleep(3600)  # the parent kills us here


def main() -> None:
    mode, url, schema = sys.argv[1], sys.argv[2], sys.argv[3]
    schema_or_none = None if schema == "-" else schema
    if mode == "run":
        anyio.run(run, url, schema_or_none, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        anyio.run(crash, url, schema_or_none, sys.argv[4])
    os._exit(0)


if __name__ == "__main__":
    main()
