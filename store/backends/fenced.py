"""The fenced writes every backend shares, in an open write transaction: a step commits
only while its turn holds the lease with the epoch it claimed; a refused one says why."""

from __future__ import annotations

from .records import StepWrite
from .tx import Tx


async def commit_step_in(tx: Tx, step: StepWrite) -> str | None:
    """Commit a step inside an open write transaction: check the turn's fencing token,
    then insert. Returns None, or ``'<status>:<steps>'`` having written nothing."""
    touched = await tx.run(
        "fence_step",
        turn_id=step.turn_id,
        conversation_id=step.conversation_id,
        epoch=step.epoch,
        step=step.step,
        lease_seconds=step.lease_seconds,
    )
    if touched != 1:
        return await refusal(tx, step.turn_id, step.conversation_id)
    await tx.run_many("insert_message", step.message_rows())
    return None


async def refusal(tx: Tx, turn_id: str, conversation_id: str) -> str:
    """Why a fenced write on ``turn_id`` touched nothing: ``'<status>:<steps>'``."""
    state = await tx.one("turn_state", turn_id=turn_id, conversation_id=conversation_id)
    return f"{state.status}:{state.steps}" if state else "missing:-1"
