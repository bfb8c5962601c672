"""Beginning a turn: idempotency, the fair wait queue, takeover, and the hand-over to the
next turn in line when a turn ends.

Every decision is taken inside one short write transaction that holds the conversation
(advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite):

1. a repeated idempotency key (or, for keyless submits, the same message while its turn
   runs or within the duplicate window) returns the first turn: no new turn, no message;
2. running turns whose lease expired are taken over: marked ``expired``, and the step they
   had checkpointed is committed with "interrupted" results for its unanswered calls
   (``store.recovery``);
3. if no turn runs and nobody queued earlier, the turn is claimed: the conversation's
   epoch (the fencing token) is bumped and the user message written, all in that
   transaction; otherwise the submit queues (``on_busy="wait"``) or is refused at once.

A queued submit polls (woken early by turns that end in this process) until it is the
oldest live waiter and the conversation is free, refreshing its own lease meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import anyio

from . import telemetry
from .backends.records import ClaimRequest, ClaimRow, TurnEnd
from .backends.tx import Tx
from .config import StoreConfig
from .core import Core
from .errors import (
    ConversationBusy,
    InvalidMessage,
    OutcomeUnknown,
    StoreUnavailable,
    TurnTakenOver,
    WriteNotApplied,
)
from .messages import (
    Content,
    check_identifier,
    encode_user_message,
)
from .outcome import Busy, Claimed, Decision, Duplicate, Queued, TakenOver, TurnOutcome
from .recovery import recover_expired
from .turn import Turn

OnBusy = Literal["wait", "fail"]

#: How long a submit on a conversation held by a turn of this process waits for that
#: turn's next write to share its transaction (group commit), before it writes alone.
CLAIM_LINGER_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Submit:
    conversation_id: str
    content_json: str
    content_hash: str
    idempotency_key: str | None
    owner: str  # the submitting store's (shown as the turn's lease owner)


#: A turn that has run: a poll or a retry for it must not claim it again.
RAN = frozenset({"expired", "finished", "failed", "interrupted"})


async def begin_turn(
    core: Core,
    conversation_id: str,
    user_message: Content,
    *,
    idempotency_key: str | None,
    on_busy: OnBusy,
    timeout: float | None,
) -> Turn:
    limits = core.limits
    check_identifier(conversation_id, "conversation id", limits.max_id_length)
    if idempotency_key is not None:
        check_identifier(idempotency_key, "idempotency key", limits.max_id_length)
    if on_busy not in ("wait", "fail"):
        raise InvalidMessage(f"on_busy must be 'wait' or 'fail', got {on_busy!r}")
    content_json = encode_user_message(user_message, limits)
    submit = Submit(
        conversation_id,
        content_json,
        hashlib.sha256(content_json.encode()).hexdigest(),
        idempotency_key,
        core.owner,
    )
    timeout = core.config.busy_timeout if timeout is None else timeout
    started = anyio.current_time()
    with telemetry.span("begin_turn", conversation_id) as span:
        turn = await _begin(core, submit, on_busy, timeout, started)
        if span.is_recording():
            span.set_attribute("turnstore.turn_id", turn.id)
            span.set_attribute("turnstore.outcome", "duplicate" if turn.duplicate else "claimed")
            span.set_attribute("turnstore.wait_seconds", anyio.current_time() - started)
    if turn.duplicate:
        telemetry.duplicate_submits.add(1)
    else:
        telemetry.turns.add(1)
    return turn


async def _begin(
    core: Core, submit: Submit, on_busy: OnBusy, timeout: float, started: float
) -> Turn:
    conversation_id, idempotency_key = submit.conversation_id, submit.idempotency_key

    decision: Decision | None = None
    if idempotency_key is not None:
        # A submit of the same key and message by this process is being decided right now
        # (a double click): it will be the turn, this one its duplicate. Without a write.
        earlier = core.wakeups.submit_in_flight(conversation_id, idempotency_key)
        if earlier is not None and earlier.content_hash == submit.content_hash:
            await earlier.decided.wait()
            decision = earlier.duplicate
    # The same submit again after its claim's outcome was unknown: the same turn id, so
    # that a claim that landed is recognised as this submit's own, not as a duplicate.
    unknown = (conversation_id, idempotency_key or submit.content_hash)
    resumed = core.unknown_claims.pop(unknown, None)
    turn_id = resumed or f"turn_{uuid.uuid4().hex}"
    try:
        with core.wakeups.deciding(conversation_id, turn_id):
            if decision is None:
                with core.wakeups.submitting(
                    conversation_id, idempotency_key, submit.content_hash
                ) as f:
                    decision = await _decide(
                        core, submit, turn_id, on_busy, first=True, retry=resumed is not None
                    )
                    f.duplicate = _as_duplicate(decision)
            if isinstance(decision, Queued):
                decision = await _wait_in_queue(core, submit, decision.turn_id, started + timeout)
    except StoreUnavailable as exc:
        # The submit may stand in the database (claimed by an attempt whose reply was lost,
        # or waiting in line): the same submit again goes on with the same turn id, and is
        # answered as this submit, never as a duplicate of itself.
        core.unknown_claims[unknown] = turn_id
        if isinstance(exc, WriteNotApplied) and resumed is None and decision is None:
            raise  # nothing of this submit can be in the database
        raise OutcomeUnknown(
            f"the submit to conversation {conversation_id!r} may stand (turn {turn_id}): "
            f"{exc}. Submit it again (same key and message) once the database is back: it is "
            "answered as this submit"
        ) from exc
    if isinstance(decision, Busy):
        raise ConversationBusy(conversation_id, waited=anyio.current_time() - started)
    if isinstance(decision, TakenOver):
        raise TurnTakenOver(conversation_id, decision.turn_id, decision.status)
    if isinstance(decision, Duplicate):
        return Turn(
            core,
            turn_id=decision.turn_id,
            conversation_id=conversation_id,
            duplicate=True,
            status=decision.status,
        )
    assert isinstance(decision, Claimed)
    return _turn(core, conversation_id, decision)


async def _decide(
    core: Core,
    submit: Submit,
    turn_id: str,
    on_busy: OnBusy,
    *,
    first: bool,
    retry: bool = False,
) -> Decision:
    """One claim decision (retried on transient failures: each retry asks the database
    whether the attempt before it landed). ``retry``: an earlier call's attempt may have."""
    core.claim_decisions[0 if first else 1] += 1
    attempts = 0
    # A turn of this process holds the conversation: this submit will queue behind it (or
    # is a duplicate), and that turn's next write comes within moments. Ride in its batch
    # rather than take a transaction of its own on the conversation's critical path.
    linger = (
        CLAIM_LINGER_SECONDS
        if first and on_busy == "wait" and core.wakeups.held_here(submit.conversation_id)
        else 0.0
    )

    async def attempt() -> Decision:
        nonlocal attempts
        attempts += 1
        wait = linger if attempts == 1 else 0.0  # a retry goes at once
        fast = await core.backend.claim_fast(
            ClaimRequest(
                lock_key=core.backend.lock_key(submit.conversation_id),
                conversation_id=submit.conversation_id,
                turn_id=turn_id,
                idempotency_key=submit.idempotency_key,
                content_hash=submit.content_hash,
                content_json=submit.content_json,
                owner=submit.owner,
                lease_seconds=core.config.lease_seconds,
                window_seconds=core.config.duplicate_window_seconds,
                fail_when_busy=on_busy == "fail",
                first=first,
                retry=retry or attempts > 1,
            ),
            linger=wait,
        )
        if fast is not None and fast.decision != "recover":
            return _from_row(fast, submit)
        again = retry or attempts > 1

        async def decide(tx: Tx) -> Decision:
            if again:
                # The connection broke during the first attempt: did its COMMIT land?
                landed = await _own_landed_attempt(tx, turn_id, submit.conversation_id)
                if landed is not None:
                    return landed
            return await _decide_in(core.config, tx, submit, turn_id, on_busy, first=first)

        return await core.backend.transaction(submit.conversation_id, decide, linger=wait)

    with anyio.CancelScope(shield=True):
        decision = await core.backend.retrying(attempt)
    return decision


def _as_duplicate(decision: Decision) -> Duplicate | None:
    """What a second submit of the same key and message gets, given the first's decision."""
    if isinstance(decision, Claimed):
        return Duplicate(decision.turn_id, "running")
    if isinstance(decision, Queued):
        return Duplicate(decision.turn_id, "queued")
    return decision if isinstance(decision, Duplicate) else None


def _from_row(row: ClaimRow, submit: Submit) -> Decision:
    if row.decision == "claimed":
        assert row.next_position is not None
        return Claimed(row.turn_id, row.epoch, row.next_position)
    if row.decision == "duplicate":
        return Duplicate(row.turn_id, row.status or "running")
    if row.decision == "queued":
        return Queued(row.turn_id)
    if row.decision == "busy":
        return Busy()
    if row.decision == "taken_over":
        return TakenOver(row.turn_id, row.status or "expired")
    if row.decision == "key_reused":
        raise _key_reused(submit)
    raise AssertionError(f"unknown claim decision {row.decision!r}")


def _key_reused(submit: Submit) -> InvalidMessage:
    return InvalidMessage(
        f"idempotency key {submit.idempotency_key!r} was already used in this "
        "conversation for a different message"
    )


async def _own_landed_attempt(tx: Tx, turn_id: str, conversation_id: str) -> Decision | None:
    state = await tx.one("turn_state", turn_id=turn_id, conversation_id=conversation_id)
    if state is not None and state.status in RAN:
        return TakenOver(turn_id, state.status)
    if state is None or state.status not in ("running", "queued"):
        return None
    if state.status == "queued":
        return Queued(turn_id)
    return await _started(tx, turn_id, conversation_id, state.epoch)


async def _started(tx: Tx, turn_id: str, conversation_id: str, epoch: int) -> Claimed:
    """A running turn that has written only its user message: where its steps go."""
    position = await tx.scalar("next_position", conversation_id=conversation_id)
    return Claimed(turn_id, epoch, position)


async def _decide_in(
    config: StoreConfig, tx: Tx, submit: Submit, turn_id: str, on_busy: OnBusy, *, first: bool
) -> Decision:
    cid = submit.conversation_id
    lease = config.lease_seconds
    requeue = False
    if not first:  # a poll: was this waiting turn handed the conversation meanwhile?
        state = await tx.one("turn_state", turn_id=turn_id, conversation_id=cid)
        if state is not None and state.status == "running":
            return await _started(tx, turn_id, cid, state.epoch)
        if state is not None and state.status in RAN:  # and lost it while its submitter
            return TakenOver(turn_id, state.status)  # was away: never claim it again
    if first:
        earlier = await _earlier_submit(config, tx, submit)
        if earlier is not None:
            if earlier.status != "refused":
                return Duplicate(earlier.id, earlier.status)
            # The earlier submit gave up waiting and wrote nothing: this one retries it.
            turn_id, requeue = earlier.id, True

    head = await tx.one("queue_head", conversation_id=cid)
    if head is not None and head.stale:
        await recover_expired(config, tx, cid)
        head = await tx.one("queue_head", conversation_id=cid)
    free = head is None or (head.id == turn_id and head.status == "queued")
    if not free:
        if on_busy == "fail" and first:
            return Busy()
        if first:
            if requeue:
                await tx.run(
                    "requeue_turn",
                    turn_id=turn_id,
                    conversation_id=cid,
                    owner=submit.owner,
                    lease_seconds=lease,
                    pending_content=submit.content_json,
                )
            else:
                await _insert_turn(tx, config, submit, turn_id, "queued", 0)
            return Queued(turn_id)
        touched = await tx.run(
            "refresh_queued_turn", turn_id=turn_id, conversation_id=cid, lease_seconds=lease
        )
        return Queued(turn_id) if touched else Busy()

    epoch = await tx.scalar("bump_epoch", conversation_id=cid)
    if epoch is None:  # the conversation's first turn
        epoch = await tx.scalar("first_epoch", conversation_id=cid)
    if first and not requeue:
        await _insert_turn(tx, config, submit, turn_id, "running", epoch)
    else:  # a waiting turn, or one that gave up waiting (refused) and is submitted again
        await tx.run(
            "promote_turn",
            turn_id=turn_id,
            conversation_id=cid,
            epoch=epoch,
            owner=submit.owner,
            lease_seconds=lease,
        )
    position = await tx.scalar("next_position", conversation_id=cid)
    await tx.run(
        "insert_message",
        conversation_id=cid,
        position=position,
        role="user",
        turn_id=turn_id,
        step=0,
        step_position=position,
        tool_call_count=0,
        content=submit.content_json,
        tool_call_id=None,
        tool_name=None,
        tool_arguments=None,
        tool_call_data=None,
        is_error=False,
    )
    return Claimed(turn_id, epoch, position + 1)


async def _earlier_submit(config: StoreConfig, tx: Tx, submit: Submit) -> Any:
    if submit.idempotency_key is not None:
        row = await tx.one(
            "turn_by_key",
            conversation_id=submit.conversation_id,
            idempotency_key=submit.idempotency_key,
        )
        if row is not None and row.content_hash != submit.content_hash:
            raise _key_reused(submit)
        return row
    window = config.duplicate_window_seconds
    if not window:
        return None
    return await tx.one(
        "recent_turn_with_content",
        conversation_id=submit.conversation_id,
        content_hash=submit.content_hash,
        window=window,
    )


async def _insert_turn(
    tx: Tx, config: StoreConfig, submit: Submit, turn_id: str, status: str, epoch: int
) -> None:
    await tx.run(
        "insert_turn",
        turn_id=turn_id,
        conversation_id=submit.conversation_id,
        idempotency_key=submit.idempotency_key,
        content_hash=submit.content_hash,
        status=status,
        epoch=epoch,
        owner=submit.owner,
        lease_seconds=config.lease_seconds,
        # a waiting turn keeps its message: the turn that ends before it starts it
        pending_content=submit.content_json if status == "queued" else None,
    )


async def _wait_in_queue(core: Core, submit: Submit, turn_id: str, deadline: float) -> Decision:
    """Wait until this turn is handed the conversation (told at once if the turn before
    it ends in this process), or finds it free at a poll, or the deadline passes."""
    cid = submit.conversation_id
    delay = core.config.poll_min_seconds
    telemetry.queued_submits.add(1)
    with core.wakeups.queued(cid, turn_id) as waiter, _counted_out():
        try:
            while waiter.handed is None:
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    break
                # A turn of this process that holds the conversation hands it over or wakes
                # the line when it ends: poll only to keep this turn's own lease alive.
                if core.wakeups.held_here(cid):
                    pause = core.config.heartbeat_seconds or delay
                else:
                    pause = delay
                    delay = min(delay * 2, core.config.poll_max_seconds)
                await core.wakeups.sleep(waiter, min(pause, remaining))
                if waiter.handed is not None:
                    break
                try:
                    decision = await _decide(core, submit, turn_id, "wait", first=False)
                except StoreUnavailable:
                    continue  # a missed poll: the turn keeps its place until the deadline
                if not isinstance(decision, Queued):
                    return decision
            if waiter.handed is not None:
                return _from_row(waiter.handed, submit)
        except BaseException:
            started = await _give_up(core, submit, turn_id, "the submitter stopped waiting")
            if isinstance(started, Claimed):  # handed over as it gave up: end the turn
                with anyio.CancelScope(shield=True):
                    await _turn(core, cid, started).end_quietly(
                        "interrupted", "the submitter stopped waiting"
                    )
            raise
    started = await _give_up(core, submit, turn_id, "timed out waiting for the conversation")
    return started if started is not None else Busy()


async def _give_up(
    core: Core, submit: Submit, turn_id: str, why: str
) -> Claimed | TakenOver | None:
    """Leave the line. If the turn was handed the conversation just before (it runs, its
    message written), return it: the caller runs it or ends it; if it was handed over and
    has run since, say so."""
    cid = submit.conversation_id

    async def leave(tx: Tx) -> Claimed | TakenOver | None:
        if await tx.run("refuse_queued_turn", turn_id=turn_id, conversation_id=cid, error=why):
            return None
        state = await tx.one("turn_state", turn_id=turn_id, conversation_id=cid)
        if state is not None and state.status == "running":
            return await _started(tx, turn_id, cid, state.epoch)
        if state is not None and state.status in RAN:
            return TakenOver(turn_id, state.status)
        return None

    def attempt() -> Awaitable[Claimed | TakenOver | None]:
        return core.backend.transaction(cid, leave)

    with anyio.CancelScope(shield=True):
        started = await core.backend.retrying(attempt)
    if started is None:  # its duplicates learn it; the next in line may claim
        core.wakeups.turn_ended(cid, TurnOutcome(turn_id, "refused", why, 0), handed_over=False)
    return started


@contextlib.contextmanager
def _counted_out() -> Iterator[None]:
    try:
        yield
    finally:
        telemetry.queued_submits.add(-1)


def _turn(core: Core, conversation_id: str, claimed: Claimed) -> Turn:
    return Turn(
        core,
        turn_id=claimed.turn_id,
        conversation_id=conversation_id,
        duplicate=False,
        epoch=claimed.epoch,
        next_position=claimed.next_position,
    )


async def hand_over(config: StoreConfig, tx: Tx, end: TurnEnd) -> ClaimRow | None:
    """Start the next turn in line, inside the transaction that ended the turn before it:
    its user message is written now, and its submitter finds it running (at once if it
    waits in this process, else at its next poll). PostgreSQL's turnstore_apply does the
    same in SQL."""
    row = await tx.one("next_in_line", conversation_id=end.conversation_id)
    if row is None:
        return None
    waiting = Submit(end.conversation_id, row.pending_content, "", None, row.lease_owner)
    decision = await _decide_in(config, tx, waiting, row.id, "wait", first=False)
    if not isinstance(decision, Claimed):
        return None
    return ClaimRow("claimed", decision.turn_id, "running", decision.epoch, decision.next_position)
