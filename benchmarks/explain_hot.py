"""EXPLAIN ANALYZE of the statements inside the hot SQL functions (PostgreSQL).

    python -m benchmarks.explain_hot [--db URL] [--turns 2000]

Writes ``--turns`` turns of history into a fresh schema, then runs one more turn with
``auto_explain`` logging every nested statement to this client: the plan and timing of
each statement inside ``turnstore_apply`` (a claim, a step and an end, one call each)
and of the foreign-key checks at COMMIT. Needs a superuser (``LOAD 'auto_explain'``).
"""

from __future__ import annotations

import argparse
import uuid

import anyio
import asyncpg

from store import AssistantMessage, Store, ToolCall, ToolResult

from .dbtarget import DEFAULT_DB, parse_db_url

HTML = "<section><h2>Menu</h2><p>" + "sourdough, rye, " * 20 + "</p></section>"


def _step(prefix: str) -> tuple[AssistantMessage, list[ToolResult]]:
    calls = [ToolCall(f"{prefix}_{k}", "insertHtml", {"html": HTML}) for k in range(3)]
    return AssistantMessage("inserting", calls), [ToolResult(c.id, HTML) for c in calls]


async def main_async(url: str, turns: int) -> None:
    target = parse_db_url(url)
    assert target.backend == "postgres" and target.asyncpg_dsn is not None
    schema = f"explain_{uuid.uuid4().hex[:8]}"
    store = await Store.open(target.sqlalchemy_url(schema), schema=schema, pool_size=1)
    try:
        for n in range(turns):
            turn = await store.begin_turn(f"c{n % 50}", f"prompt {n}")
            for s in range(2):
                await turn.commit_step(*_step(f"{turn.id}_{s}"))
            await turn.finish()
        # One more turn, through turnstore_apply (one write per call) on a connection of
        # our own with auto_explain logging each nested statement back to it.
        from store.backends.base import ClaimRequest, StepWrite, TurnEnd
        from store.backends.postgres import as_record

        apply = "SELECT * FROM turnstore_apply($1::turnstore_write[])"
        conn = await asyncpg.connect(target.asyncpg_dsn, server_settings={"search_path": schema})
        plans: list[str] = []
        conn.add_log_listener(lambda _c, msg: plans.append(msg.message))
        await conn.execute(
            "LOAD 'auto_explain';"
            " SET auto_explain.log_min_duration = 0;"
            " SET auto_explain.log_analyze = on;"
            " SET auto_explain.log_buffers = on;"
            " SET auto_explain.log_nested_statements = on;"
            " SET client_min_messages = log;"
        )
        key = store.backend.lock_key("c0")
        content = '[{"type":"text","text":"one more"}]'
        claim = ClaimRequest(
            lock_key=key, conversation_id="c0", turn_id="turn_explain", idempotency_key=None,
            content_hash="h", content_json=content, owner="explain", lease_seconds=30.0,
            window_seconds=10.0, fail_when_busy=True, first=True, retry=False,
        )  # fmt: skip
        (row,) = await conn.fetch(apply, [as_record(claim)])
        message, _ = _step("explain")
        step = StepWrite(
            lock_key=key, conversation_id="c0", turn_id="turn_explain", epoch=row["epoch"],
            lease_seconds=30.0, step=1, position=row["next_position"],
            content_json='[{"type":"text","text":"inserting"}]',
            call_ids=[c.id for c in message.tool_calls],
            tool_names=[c.name for c in message.tool_calls],
            arguments_json=['{"html":"x"}'] * 3, call_data_json=[None] * 3,
            results_json=['[{"type":"text","text":"ok"}]'] * 3, is_error=[False] * 3,
        )  # fmt: skip
        await conn.fetch(apply, [as_record(step)])
        end = TurnEnd(
            lock_key=key, conversation_id="c0", turn_id="turn_explain", epoch=row["epoch"],
            status="finished", error=None, final=None, lease_seconds=30.0,
        )  # fmt: skip
        await conn.fetch(apply, [as_record(end)])
        await conn.close()
        for plan in plans:
            print(plan)
            print("-" * 100)
    finally:
        await store.close()
        conn2 = await asyncpg.connect(target.asyncpg_dsn)
        await conn2.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn2.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.explain_hot")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--turns", type=int, default=2000)
    args = parser.parse_args()
    anyio.run(main_async, args.db, args.turns)


if __name__ == "__main__":
    main()
