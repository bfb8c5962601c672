"""Erasing a conversation: the one path by which rows leave the store.

History is append-only (the database refuses UPDATE and DELETE of messages), and nothing
the store does removes a row, with one exception an application asks for explicitly: a
privacy request or a retention rule that erases a whole conversation. ``erase`` deletes
every row of one conversation — its messages, turns, staged steps, session marks and
writes, and the conversation itself — in one transaction that holds the conversation like
every write. The database lets those DELETEs through only because the transaction first
records the conversation in ``turnstore_erasures`` (and removes that record before
committing); see ``schema/*/0010_session_marks_and_erasure.sql``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .backends.tx import Tx
from .errors import ConversationInUse
from .messages import check_identifier

if TYPE_CHECKING:
    from .store import Store


@dataclass(frozen=True, slots=True)
class Erased:
    """What ``Store.delete_conversation`` removed: row counts per table (all 0 when the
    conversation did not exist)."""

    conversation_id: str
    messages: int
    turns: int
    staged_steps: int
    session_marks: int
    session_writes: int

    @property
    def existed(self) -> bool:
        return bool(self.messages or self.turns)


@dataclass(frozen=True, slots=True)
class _Refused:
    live: tuple[tuple[str, str], ...]  # (turn id, status) of the turns running or queued


async def erase(store: Store, conversation_id: str, *, force: bool = False) -> Erased:
    """Delete every row of ``conversation_id`` in one transaction. Refused with
    ``ConversationInUse`` (nothing deleted) while a turn runs or waits there, unless
    ``force``: then that turn is erased too, and its next write fails with ``LeaseLost``.
    Erasing a conversation that does not exist deletes nothing. Safe to repeat (after an
    ``OutcomeUnknown``, say): a second erasure finds nothing to delete."""
    check_identifier(conversation_id, "conversation id", store.limits.max_id_length)
    cid = conversation_id

    async def work(tx: Tx) -> Erased | _Refused:
        live = await tx.all("erase_live_turns", conversation_id=cid)
        if live and not force:
            return _Refused(tuple((row.id, row.status) for row in live))
        await tx.run("erase_begin", conversation_id=cid)
        messages = await tx.run("erase_messages", conversation_id=cid)
        staged = await tx.run("erase_staged_steps", conversation_id=cid)
        marks = await tx.run("erase_marks", conversation_id=cid)
        writes = await tx.run("erase_writes", conversation_id=cid)
        turns = await tx.run("erase_turns", conversation_id=cid)
        await tx.run("erase_conversation", conversation_id=cid)
        await tx.run("erase_end", conversation_id=cid)
        return Erased(cid, messages, turns, staged, marks, writes)

    def attempt() -> Awaitable[Erased | _Refused]:
        return store._backend.transaction(cid, work)

    with anyio.CancelScope(shield=True):  # once started, it completes: the caller learns how
        try:
            outcome = await store._backend.retrying(attempt)
        except Exception as exc:
            raise store._backend.translate(exc) from exc
    if isinstance(outcome, _Refused):
        raise ConversationInUse(cid, outcome.live)
    for key in [k for k in store._core.unknown_claims if k[0] == cid]:
        del store._core.unknown_claims[key]
    return outcome
