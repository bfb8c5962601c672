"""Property-based: random sequences of turns, steps, duplicates, failures and interrupted
steps, run against the store and against a plain in-memory model of what history should
be. Both backends; each example on a fresh database."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import AssistantMessage, InvalidMessage, Store, StoreConfig, ToolCall, ToolResult, hooks
from store.checker import check
from store.messages import INTERRUPTED

from .conftest import PG_URL, _drop_schema

Turn = tuple[int, str | None, int, list[int], str, int]

turns = st.tuples(
    st.integers(0, 2),  # conversation
    st.sampled_from([None, "k0", "k1", "k2"]),  # idempotency key
    st.integers(0, 2),  # which prompt text
    st.lists(st.integers(0, 3), max_size=3),  # steps: tool calls per step
    st.sampled_from(["finish", "finish_with_answer", "fail", "interrupt"]),
    st.integers(0, 3),  # interrupt: how many results came back before the cancel
)


@dataclass
class Model:
    history: dict[str, list[tuple[str, str, bool]]] = field(default_factory=dict)
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # -> prompt text
    keyless: set[tuple[str, str]] = field(default_factory=set)


async def _run(store: Store, plan: list[Turn]) -> Model:
    model = Model()
    for n, (conv, key, prompt, steps, end, answered) in enumerate(plan):
        cid, text = f"c{conv}", f"prompt {prompt}"
        expected = model.history.setdefault(cid, [])
        if key is not None and (cid, key) in model.keys and model.keys[(cid, key)] != text:
            with pytest.raises(InvalidMessage):
                await store.begin_turn(cid, text, idempotency_key=key, on_busy="fail")
            continue
        turn = await store.begin_turn(cid, text, idempotency_key=key, on_busy="fail")
        repeated = (cid, key) in model.keys if key else (cid, text) in model.keyless
        assert turn.duplicate == repeated
        if turn.duplicate:
            continue
        if key:
            model.keys[(cid, key)] = text
        else:
            model.keyless.add((cid, text))
        expected.append(("user", text, False))
        for s, calls in enumerate(steps):
            ids = [f"t{n}s{s}c{i}" for i in range(calls)]
            await turn.commit_step(
                AssistantMessage(f"step {s}", [ToolCall(i, "tool", {}) for i in ids]),
                [ToolResult(i, f"result {i}") for i in ids],
            )
            expected.append(("assistant", f"step {s}", False))
            expected += [("tool", f"result {i}", False) for i in ids]
        if end == "finish":
            await turn.finish()
        elif end == "finish_with_answer":
            await turn.finish("the answer")
            expected.append(("assistant", "the answer", False))
        elif end == "fail":
            await turn.fail("model error")
        else:
            ids = [f"t{n}x{i}" for i in range(3)]
            with anyio.CancelScope() as scope:
                async with turn.step() as step:
                    step.text("interrupted step")
                    for i in ids:
                        step.tool_call(i, "tool", {})
                    for i in ids[:answered]:
                        step.tool_result(i, f"result {i}")
                    scope.cancel()
                    await anyio.lowlevel.checkpoint()
            expected.append(("assistant", "interrupted step", False))
            expected += [
                ("tool", f"result {i}", False) if k < answered else ("tool", INTERRUPTED, True)
                for k, i in enumerate(ids)
            ]
        status = (await store.turn_status(turn.id)).status
        want = {"finish": "finished", "finish_with_answer": "finished", "fail": "failed"}
        assert status == want.get(end, "interrupted")
    return model


async def _compare(store: Store, model: Model) -> None:
    for cid, expected in model.history.items():
        history = await store.history(cid)
        assert [(m.role, m.text, m.is_error) for m in history] == expected
        for last in range(1, len(history) + 1):
            window = await store.history(cid, last=last)
            assert window == history[len(history) - len(window) :]
            assert len(window) >= last and window[0].role != "tool"
    report = await check(hooks.backend(store))
    assert report.ok, report.violations


CONFIG = StoreConfig(duplicate_window_seconds=3600)
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(plan=st.lists(turns, min_size=1, max_size=12))
def test_store_matches_the_model_on_sqlite(plan: list[Turn]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'model.db'}"
            async with Store.open(url, config=CONFIG) as store:
                await _compare(store, await _run(store, plan))

    anyio.run(main)


@SETTINGS
@given(plan=st.lists(turns, min_size=1, max_size=12))
def test_store_matches_the_model_on_postgres(plan: list[Turn]) -> None:
    if PG_URL == "skip":
        pytest.skip("STORE_PG_URL=skip: PostgreSQL tests not run")

    async def main() -> None:
        schema = f"m_{uuid.uuid4().hex[:12]}"
        try:
            async with Store.open(PG_URL, schema=schema, config=CONFIG) as store:
                await _compare(store, await _run(store, plan))
        finally:
            await _drop_schema(schema)

    anyio.run(main)
