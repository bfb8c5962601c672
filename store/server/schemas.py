"""The service's request and response bodies (its OpenAPI document is built from them).

Content is turnstore's: a string, or a list of parts ``{"type": "text", "text": ...}``,
``{"type": "image", "mime_type": ..., "data": <base64>}`` (or ``"url"``), reasoning parts in
a provider's own shape for assistant messages, ``{"type": "json", ...}`` in tool results.
The parts are checked by the library (``store.messages``): a part it refuses is a 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_COUNT = 2**53 - 1  # exact in every JSON client (JavaScript's numbers too)
Id = Annotated[str, Field(min_length=1, max_length=256)]


class Part(BaseModel):
    """A content part: ``type`` and the fields of that type (kept as given)."""

    model_config = ConfigDict(extra="allow")
    type: str


Content = str | list[Part]


def content_value(content: Content) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [part.model_dump() for part in content]


# --- turns ------------------------------------------------------------------------------


class BeginTurn(BaseModel):
    content: Content = Field(description="The user message: a string or a list of parts.")
    on_busy: Literal["wait", "fail"] = Field(
        "wait",
        description="A conversation busy with another turn: wait in line (up to `timeout`) "
        "or answer 409 ConversationBusy at once.",
    )
    timeout: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="Seconds to wait for a busy conversation (capped by the server's "
        "--max-wait); default the server's busy timeout.",
    )


class TurnBegun(BaseModel):
    turn_id: str
    conversation_id: str
    status: str
    duplicate: bool = Field(
        description="A repeated Idempotency-Key (or the same message while its turn runs): "
        "this is the first submit's turn, nothing new was written; wait for it."
    )
    epoch: int | None = Field(
        description="The turn's fencing token: send it as the Turn-Epoch header with every "
        "write to the turn. None for a duplicate (only the first submitter writes)."
    )
    lease_seconds: float


class TextEvent(BaseModel):
    type: Literal["text"]
    text: str


class ReasoningEvent(BaseModel):
    type: Literal["reasoning"]
    part: dict[str, Any] = Field(description="Provider reasoning, in the provider's own shape.")


class ToolCallEvent(BaseModel):
    type: Literal["tool_call"]
    id: Id
    name: Id
    arguments: dict[str, Any] = Field(default_factory=dict)
    provider_data: dict[str, Any] | None = None


class ToolResultEvent(BaseModel):
    type: Literal["tool_result"]
    call_id: Id
    content: Content = ""
    is_error: bool = False


class CheckpointEvent(BaseModel):
    """Stage the open step again and renew the lease (every acknowledged event is staged
    already: this is a heartbeat that also says the step is durable)."""

    type: Literal["checkpoint"]


class EndStepEvent(BaseModel):
    """Commit the open step now (a step without tool calls, say). Unanswered calls are a
    422 unless ``interrupt_unanswered``: then each gets an "interrupted" error result."""

    type: Literal["end_step"]
    interrupt_unanswered: bool = False


Event = Annotated[
    TextEvent | ReasoningEvent | ToolCallEvent | ToolResultEvent | CheckpointEvent | EndStepEvent,
    Field(discriminator="type"),
]


class Events(BaseModel):
    events: list[Event] = Field(min_length=1, max_length=1024)
    seq: int | None = Field(
        None,
        ge=0,
        le=MAX_COUNT,
        description="How many events of this turn the client sent before these (the index "
        "of the first). Makes a retry exact: events the server already has are skipped; "
        "a gap is a 409 EventGap naming where to resume.",
    )


class OpenStep(BaseModel):
    step: int
    calls: list[str]
    unanswered: list[str]
    parts: int


class EventsAck(BaseModel):
    turn_id: str
    events: int | None = Field(description="Events of this turn the server holds (seq).")
    steps: int = Field(description="Steps of this turn committed to history.")
    committed: list[int] = Field(description="Step numbers this request committed.")
    open_step: OpenStep | None
    duplicate: bool = Field(description="Every event of the request was already applied.")


class ToolCallIn(BaseModel):
    id: Id
    name: Id
    arguments: dict[str, Any] = Field(default_factory=dict)
    provider_data: dict[str, Any] | None = None


class ToolResultIn(BaseModel):
    call_id: Id
    content: Content = ""
    is_error: bool = False


class StepIn(BaseModel):
    content: Content = ""
    tool_calls: list[ToolCallIn] = Field(default_factory=list, max_length=1024)
    results: list[ToolResultIn] = Field(
        default_factory=list,
        max_length=1024,
        description="Exactly one result per tool call, in any order.",
    )
    step: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="The step number this is (the turn's steps + 1). Makes a retry exact: "
        "a step already committed with the same content answers 200 duplicate.",
    )


class StepAck(BaseModel):
    turn_id: str
    step: int
    duplicate: bool


class Finish(BaseModel):
    final: StepIn | None = Field(
        None,
        description="The turn's last step (the model's answer), committed in the same "
        "transaction as the end.",
    )


class EndReason(BaseModel):
    reason: str = Field("", max_length=4096)


class UsageIn(BaseModel):
    prompt_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    completion_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    cache_read_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    cache_creation_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    cost_usd: float | None = Field(None, ge=0, le=1e9)
    step: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="The step it is for; none: the turn as a whole."
    )
    model: Id | None = None


class UsageTotals(BaseModel):
    reports: int
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float | None = Field(description="None when no report gave a cost.")


class UsageRecord(BaseModel):
    turn_id: str
    seq: int
    step: int | None
    usage_id: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float | None
    created_at: datetime | None
    duplicate: bool


class TurnView(BaseModel):
    turn_id: str
    conversation_id: str
    status: str
    steps: int
    error: str | None
    idempotency_key: str | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    ended: bool
    open_step: OpenStep | None
    usage: UsageTotals


class Heartbeat(BaseModel):
    turn_id: str
    lease_seconds: float


# --- conversations ----------------------------------------------------------------------


class ToolCallView(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]
    provider_data: dict[str, Any] | None


class MessageView(BaseModel):
    id: str = Field(description="Stable: the same message always has this id.")
    position: int
    role: Literal["user", "assistant", "tool"]
    content: list[dict[str, Any]]
    tool_calls: list[ToolCallView]
    tool_call_id: str | None
    tool_name: str | None
    is_error: bool
    turn_id: str
    step: int
    created_at: datetime | None


class ConversationUsage(BaseModel):
    conversation: UsageTotals = Field(description="Sums over every turn of the conversation.")
    turns: dict[str, UsageTotals] = Field(description="Sums per turn of the returned window.")


class History(BaseModel):
    conversation_id: str
    messages: list[MessageView]
    usage: ConversationUsage


class RepairView(BaseModel):
    kind: str
    position: int | None
    call_id: str | None
    detail: str


class Replay(BaseModel):
    provider: str
    body: dict[str, Any]
    repairs: list[RepairView]


class Erased(BaseModel):
    conversation_id: str
    existed: bool
    messages: int
    turns: int
    staged_steps: int
    session_marks: int
    session_writes: int


class Health(BaseModel):
    status: Literal["ok"]
    schema_version: int


class Problem(BaseModel):
    """RFC 9457 problem details; ``error`` names the turnstore error."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    error: str
