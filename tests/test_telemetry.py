"""OpenTelemetry: with an SDK configured, each operation leaves a span with its
conversation, turn and outcome, and the counters move; without one (the default), the
library runs the same (every other test)."""

from __future__ import annotations

from functools import cache
from typing import Any

import anyio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from store import Store, StoreConfig

from .conftest import OpenStore
from .helpers import step


@cache
def sdk() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    """The process's OpenTelemetry SDK, set once (the global providers can be set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return exporter, reader


def counters(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    found: dict[str, float] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points: Any = metric.data.data_points
                found[metric.name] = sum(
                    getattr(p, "value", getattr(p, "count", 0)) for p in points
                )
    return found


async def test_spans_and_metrics(open_store: OpenStore) -> None:
    exporter, reader = sdk()
    exporter.clear()
    before = counters(reader)
    store: Store = await open_store(config=StoreConfig(lease_seconds=0.3, poll_max_seconds=0.02))
    turn = await store.begin_turn("c", "go", idempotency_key="k")
    duplicate = await store.begin_turn("c", "go", idempotency_key="k")
    assert duplicate.duplicate
    await turn.commit_step(*step("a"))
    async with turn.step() as s:
        s.tool_call("b_0", "insertHtml", {})
        s.tool_result("b_0", "ok")
        await s.checkpoint()
    await turn.finish("done")
    await store.replay("c", "anthropic")
    stalled = await store.begin_turn("c", "again")  # then nobody renews its lease
    half = stalled.step()
    half.tool_call("c_0", "insertHtml", {})
    await half.checkpoint()  # what the turn taking over commits
    await anyio.sleep(0.5)
    taker = await store.begin_turn("c", "take over")  # takes over the stalled turn
    await taker.finish()

    spans = exporter.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    for name in ("begin_turn", "commit_step", "checkpoint", "end_turn", "replay", "takeover"):
        assert f"turnstore.{name}" in by_name, sorted(by_name)
    begins = {s.attributes["turnstore.outcome"] for s in by_name["turnstore.begin_turn"]}
    assert begins == {"claimed", "duplicate"}
    assert all(s.attributes["turnstore.conversation_id"] == "c" for s in spans)
    assert {s.attributes["turnstore.turn_id"] for s in by_name["turnstore.end_turn"]} == {
        turn.id,
        taker.id,
    }
    assert by_name["turnstore.takeover"][0].attributes["turnstore.turn_id"] == stalled.id

    after = counters(reader)

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved("turnstore.turns") == 3
    assert moved("turnstore.duplicate_submits") == 1
    assert moved("turnstore.steps") == 3  # a, b and the final answer (not the recovered one)
    assert moved("turnstore.takeovers") == 1
    assert moved("turnstore.batch_size") > 0
