"""A database holding data from every earlier schema version upgrades to the current one:
nothing is lost, the conversations replay, and they accept new turns (double submits
across the upgrade included).

For each earlier version k, on both databases: migrations 1..k on a fresh schema,
tests/upgrade/rows.json written as a client of version k would (the tables version k has),
then ``Store.open`` migrates to the current version."""

from __future__ import annotations

import pytest

from store import AssistantMessage, ToolCall, ToolResult, hooks, sql
from store.checker import check
from store.store import make_backend
from store.turn import TERMINAL

from .conftest import Target
from .upgrade.data import fixture_rows, insert, normalise, read_back, tables_at
from .upgrade.make_rows import TABLES

CURRENT = sql.code_version("postgres")
assert sql.code_version("sqlite") == CURRENT


async def _database_at(target: Target, version: int) -> None:
    backend = make_backend(target.url, schema=target.schema)
    try:
        assert await backend.migrate(upto=version) == list(range(1, version + 1))
    finally:
        await backend.close()


@pytest.mark.parametrize("version", range(1, CURRENT))
async def test_a_database_of_every_earlier_version_upgrades_with_its_data(
    target: Target, version: int
) -> None:
    await _database_at(target, version)
    rows = fixture_rows()
    await insert(target, version, rows)

    await target.migrate()  # to the current version, contract migrations too, as a deploy
    store = await target.open()
    try:
        assert await hooks.backend(store).applied_versions() == list(range(1, CURRENT + 1))
        # nothing lost, nothing changed: every row as written, no row of a later table
        expected = {t: [normalise(r) for r in rows[t]] for t in tables_at(version)}
        expected |= {t: [] for t in TABLES if t not in expected}
        assert await read_back(target, list(TABLES)) == expected
        assert (await check(hooks.backend(store))).ok

        turns = {t["idempotency_key"]: t["id"] for t in rows["turnstore_turns"]}
        history = await store.history("c-weather")
        assert [(m.position, m.role, m.tool_call_id) for m in history] == [
            (m["position"], m["role"], m["tool_call_id"])
            for m in rows["turnstore_messages"]
            if m["conversation_id"] == "c-weather"
        ]
        for provider in ("openai-chat", "anthropic", "gemini"):
            _, repairs = await store.replay("c-weather", provider)
            assert repairs == []

        # the same submit again, across the upgrade: the first submit's turn, nothing new
        again = await store.begin_turn(
            "c-weather", "Weather in Paris and Rome?", idempotency_key="submit-1"
        )
        assert again.duplicate and again.id == turns["submit-1"]
        # a new turn on the finished conversation: a step with a call and its result
        turn = await store.begin_turn("c-weather", "Now Madrid?", idempotency_key="submit-3")
        assert not turn.duplicate
        await turn.commit_step(
            AssistantMessage("Checking.", [ToolCall("call_madrid", "get_weather", {})]),
            [ToolResult("call_madrid", "25C")],
        )
        await turn.finish("Madrid: 25C.")
        # the abandoned turn's lease ran out long ago: a new submit takes over
        took_over = await store.begin_turn("c-abandoned", "Go on", idempotency_key="submit-4")
        assert not took_over.duplicate
        await took_over.finish("Done.")
        assert (await store.turn_status(turns["submit-2"])).status in TERMINAL

        after = await store.history("c-weather")
        assert after[: len(history)] == history
        assert [m.role for m in after[len(history) :]] == ["user", "assistant", "tool", "assistant"]
        assert [m.text for m in (await store.history("c-abandoned"))[-2:]] == ["Go on", "Done."]
        _, repairs = await store.replay("c-abandoned", "openai-chat")
        assert repairs == []
        assert (await check(hooks.backend(store))).ok
    finally:
        await store.close()
