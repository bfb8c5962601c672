"""Typed errors. Each one says what happened and what the caller should do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidMessage(StoreError, ValueError):
    """The input was refused before anything was written. Fix the input and retry."""


class ConversationBusy(StoreError):
    """Another turn holds the conversation.

    Raised at once with ``on_busy="fail"``, or when ``timeout`` ran out while waiting.
    Retry later, or submit with ``on_busy="wait"`` and a longer ``timeout``.
    """

    def __init__(self, conversation_id: str, *, waited: float = 0.0) -> None:
        self.conversation_id = conversation_id
        self.waited = waited
        how = f" after waiting {waited:.2f}s" if waited else ""
        super().__init__(
            f"conversation {conversation_id!r} is busy with another turn{how}; "
            "retry later or wait with a longer timeout"
        )


class ConversationInUse(ConversationBusy):
    """``Store.delete_conversation``: a turn runs or waits on the conversation, so nothing
    was deleted. Erase it once the turn has ended, or with ``force=True`` (the turn is then
    erased with the rest, and its next write fails with ``LeaseLost``)."""

    def __init__(self, conversation_id: str, live: tuple[tuple[str, str], ...]) -> None:
        self.live = live
        turns = ", ".join(f"{turn_id} ({status})" for turn_id, status in live)
        super().__init__(conversation_id)
        self.args = (
            f"conversation {conversation_id!r} has a turn in progress ({turns}); nothing was "
            "deleted. Erase it once the turn has ended, or with force=True (--force)",
        )


class LeaseLost(StoreError):
    """This turn no longer owns its conversation: its lease expired and another turn took
    over (or the turn was ended elsewhere). Nothing was written. Stop the agent loop; the
    conversation's history is intact and the new turn carries on from it."""


class TurnTakenOver(LeaseLost):
    """``begin_turn``: this submit's turn was started while its submitter was away (its
    process paused past the lease), and another turn took the conversation over. The turn's
    user message is in history, once (``turn_id``); nothing else of it was written. Submit
    again with a new idempotency key to go on from that history."""

    def __init__(self, conversation_id: str, turn_id: str, status: str) -> None:
        self.conversation_id = conversation_id
        self.turn_id = turn_id
        self.status = status
        super().__init__(
            f"turn {turn_id} of conversation {conversation_id!r} was started while its "
            f"submitter was away and then taken over ({status}); its user message is in "
            "history. Submit again with a new idempotency key to continue"
        )


class TurnFinished(StoreError):
    """The turn has already ended (finished, failed, interrupted or taken over); it accepts
    no more writes. Begin a new turn."""


class DuplicateTurnWrite(TurnFinished):
    """This handle is a duplicate submit of a turn that another caller owns: it can
    ``wait()`` for the outcome but cannot write."""


class TurnNotFound(StoreError):
    """No turn with that id exists."""


class SchemaError(StoreError):
    """The database schema is missing, older or newer than this library expects.
    Run ``python -m store migrate --db URL`` (or ``await store.migrate()``)."""


class SchemaTooOld(SchemaError):
    """The database lacks migrations this code needs. Run ``python -m store migrate --db
    URL`` (the release's expand migrations), then start this code."""


class SchemaTooNew(SchemaError):
    """The database was migrated past what this code runs against: a contract migration
    removed something this code's version uses. Run a newer turnstore release (at least
    the version the message names); the database cannot be migrated back."""


class MigrationBlocked(SchemaError):
    """A migration could not take the lock it needs within ``lock_timeout`` in any of its
    attempts: long transactions held the table. Nothing of that migration was applied
    (the earlier ones were). Run ``python -m store migrate`` again in a quieter moment, or
    with a longer ``--lock-timeout``."""


class IntegrityViolation(StoreError):
    """The database refused a write because it would break an invariant (pairing, dense
    positions, one running turn). The write was rolled back; nothing was committed."""


class StoreUnavailable(StoreError):
    """The database could not be reached, or the connection broke, and retrying for
    ``StoreConfig.retry_seconds`` did not help. The two subclasses say what happened to the
    write: ``WriteNotApplied`` (nothing was written) or ``OutcomeUnknown``."""


class WriteNotApplied(StoreUnavailable):
    """Nothing of this call was written: the database refused it or could not be reached
    before anything was sent. Retry the call (or another) once the database is back."""


class OutcomeUnknown(StoreUnavailable):
    """The connection broke after the write was sent: it may have committed or not. Call the
    same write again (same turn, same content): it is answered exactly, with the first
    outcome if it landed, and never written twice. A different write on the same turn first
    settles this one: applied after it if it landed, in its place if it did not."""
