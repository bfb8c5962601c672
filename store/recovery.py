"""Takeover: turns whose lease expired are marked expired, and what a running one had
checkpointed is committed, its unanswered calls closed as interrupted. Run inside a claim's
transaction (``store.claim``, the Agents session's writes), which holds the conversation;
PostgreSQL's ``turnstore_apply`` does the same in SQL."""

from __future__ import annotations

import json
import logging
from typing import Any

from . import telemetry
from .backends.records import StepWrite
from .backends.tx import Tx
from .config import StoreConfig
from .messages import INTERRUPTED, AssistantMessage, ToolCall, ToolResult, encode_step

log = logging.getLogger("turnstore")


async def recover_expired(config: StoreConfig, tx: Tx, conversation_id: str) -> list[str]:
    """Take over turns whose lease expired. A running one's checkpointed step is committed,
    its unanswered calls closed as interrupted. Returns the ids of the turns taken over."""
    taken = []
    for row in await tx.all("expire_stale_turns", conversation_id=conversation_id):
        if row.status != "expired":
            continue  # a queued waiter that vanished: nothing to recover
        taken.append(row.id)
        telemetry.takeovers.add(1)
        with telemetry.span("takeover", conversation_id, row.id):
            await _recover(config, tx, conversation_id, row)
    return taken


async def _recover(config: StoreConfig, tx: Tx, conversation_id: str, row: Any) -> None:
    """Commit what an expired turn had checkpointed, unanswered calls interrupted."""
    step = row.steps + 1
    payload = await tx.scalar(
        "staged_step", turn_id=row.id, conversation_id=conversation_id, step=step
    )
    if payload is not None:
        staged = json.loads(payload) if isinstance(payload, str) else payload
        # A call whose id the conversation already used cannot be committed (checkpoints
        # refuse such calls; a step staged before they did may hold one): it is left out,
        # and said, rather than refuse every later turn of the conversation.
        calls = []
        for c in staged["calls"]:
            used = await tx.scalar("call_id_used", conversation_id=conversation_id, call_id=c["id"])
            if used is not None:
                log.warning(
                    "conversation %r: turn %s's checkpointed call %r reuses a call id of the "
                    "conversation; it is left out of the recovered step",
                    conversation_id,
                    row.id,
                    c["id"],
                )
                continue
            calls.append(ToolCall(c["id"], c["name"], c["arguments"], c["provider_data"]))
        kept = {c.id for c in calls}
        staged_results = [r for r in staged["results"] if r["call_id"] in kept]
        if calls or staged["content"]:
            message = AssistantMessage(staged["content"], tuple(calls))
            answered = {r["call_id"] for r in staged_results}
            results = [
                ToolResult(r["call_id"], r["content"], r["is_error"]) for r in staged_results
            ] + [
                ToolResult(c.id, INTERRUPTED, is_error=True)
                for c in message.tool_calls
                if c.id not in answered
            ]
            write = StepWrite.of(
                encode_step(message, results, config.limits),
                lock_key=0,  # the caller's transaction already holds the conversation
                conversation_id=conversation_id,
                turn_id=row.id,
                epoch=row.epoch,
                lease_seconds=0,
                step=step,
                position=await tx.scalar("next_position", conversation_id=conversation_id),
            )
            await tx.run_many("insert_message", write.message_rows())
            await tx.run(
                "set_turn_steps", turn_id=row.id, conversation_id=conversation_id, step=step
            )
    await tx.run("drop_staged_steps", turn_id=row.id, conversation_id=conversation_id)
