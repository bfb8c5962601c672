"""OpenTelemetry spans and metrics, through ``opentelemetry-api`` only: the application
chooses the SDK and the exporter; without one configured, every call here is a no-op.

Spans (attributes ``turnstore.conversation_id``, ``turnstore.turn_id``,
``turnstore.outcome``, and ``turnstore.wait_seconds`` where a caller waited):
``turnstore.begin_turn``, ``turnstore.commit_step``, ``turnstore.checkpoint``,
``turnstore.end_turn``, ``turnstore.takeover``, ``turnstore.replay``.

Metrics: ``turnstore.turns`` (turns begun), ``turnstore.steps`` (steps committed),
``turnstore.duplicate_submits``, ``turnstore.takeovers`` (turns whose checkpointed step
this process recovered; on PostgreSQL a takeover with nothing to recover is decided inside
the claim function and not counted), ``turnstore.lease_losses``,
``turnstore.queued_submits`` (submits waiting in line now, by this process) and
``turnstore.batch_size`` (writes per group-commit batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

try:
    _VERSION = version("turnstore")
except PackageNotFoundError:  # running from a checkout that was never installed
    _VERSION = "0"

_tracer = trace.get_tracer("turnstore", _VERSION)
_meter = metrics.get_meter("turnstore", _VERSION)

turns = _meter.create_counter("turnstore.turns", description="turns begun")
steps = _meter.create_counter("turnstore.steps", description="steps committed")
duplicate_submits = _meter.create_counter(
    "turnstore.duplicate_submits", description="submits answered with an earlier turn"
)
takeovers = _meter.create_counter(
    "turnstore.takeovers", description="turns taken over after their lease expired"
)
lease_losses = _meter.create_counter(
    "turnstore.lease_losses", description="writes refused because another turn took over"
)
queued_submits = _meter.create_up_down_counter(
    "turnstore.queued_submits", description="submits of this process waiting in line"
)
batch_size = _meter.create_histogram(
    "turnstore.batch_size", description="writes per group-commit batch"
)


@contextmanager
def span(name: str, conversation_id: str, turn_id: str | None = None) -> Iterator[Span]:
    """A span around one operation of a conversation. An exception ends it with an error
    status and its type as the outcome, unless the code set an outcome itself."""
    attributes = {"turnstore.conversation_id": conversation_id}
    if turn_id is not None:
        attributes["turnstore.turn_id"] = turn_id
    with _tracer.start_as_current_span(
        f"turnstore.{name}", attributes=attributes, record_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                current.set_attribute("turnstore.outcome", type(exc).__name__)
                current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
