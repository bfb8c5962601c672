"""turnstore: a transactional conversation store for LLM agent runtimes.

A step (an assistant message with its tool calls and one result per call) commits
atomically; one turn runs at a time per conversation; repeated submits are idempotent;
the database itself refuses a tool result without its call or a call without its result.
"""

from .config import StoreConfig
from .errors import (
    ConversationBusy,
    ConversationInUse,
    DuplicateTurnWrite,
    IntegrityViolation,
    InvalidMessage,
    LeaseLost,
    MigrationBlocked,
    OutcomeUnknown,
    SchemaError,
    SchemaTooNew,
    SchemaTooOld,
    StoreError,
    StoreUnavailable,
    TurnFinished,
    TurnNotFound,
    TurnTakenOver,
    WriteNotApplied,
)
from .messages import AssistantMessage, Limits, StoredMessage, ToolCall, ToolResult
from .outcome import TurnOutcome
from .store import DEFAULT_URL, Store, TurnInfo
from .turn import StepBuffer, Turn

__all__ = [
    "DEFAULT_URL",
    "AssistantMessage",
    "ConversationBusy",
    "ConversationInUse",
    "DuplicateTurnWrite",
    "IntegrityViolation",
    "InvalidMessage",
    "LeaseLost",
    "Limits",
    "MigrationBlocked",
    "OutcomeUnknown",
    "SchemaError",
    "SchemaTooNew",
    "SchemaTooOld",
    "StepBuffer",
    "Store",
    "StoreConfig",
    "StoreError",
    "StoreUnavailable",
    "StoredMessage",
    "ToolCall",
    "ToolResult",
    "Turn",
    "TurnFinished",
    "TurnInfo",
    "TurnNotFound",
    "TurnOutcome",
    "TurnTakenOver",
    "WriteNotApplied",
]
