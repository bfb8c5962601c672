"""A session's history on turnstore's tables: the writes, pops, clears and reads of
``TurnstoreSession``, each one transaction. No SDK import.

Turns. Each SDK user message opens a turn. Inside ``session.turn(...)`` the session writes
into that turn (the store's own, claimed with its queue and idempotency key); elsewhere it
keeps *implicit* turns of its own (ids ``agents_...``): a user message opens one, and the
items that follow, in the same ``add_items`` or later ones, are steps of it, until the next
user message. An implicit turn is recorded finished at the end of each write, so it never
holds the conversation, except while a ``function_call`` waits for its output (a tool
awaiting human approval): the call is staged with the turn, which runs, and holds the
conversation for ``approval_seconds``, until its output comes. A write that finds the
conversation held by a turn that is not the session's (one begun with ``Store.begin_turn``
or another object's ``session.turn(...)``) is refused as busy and waits.

Steps. The items of one ``add_items`` are cut into steps: a step is the items of one model
response and the outputs of its function calls; it ends when all its calls are answered and
another item comes (a ``function_call_output`` only ever answers a call of its own step).
A step whose calls are all answered is committed, paired, with the turn's fencing token; a
step left with a call unanswered at the end of the write is staged. A user message while a
call waits abandons it: the step is committed with an "interrupted" output for it.

Marks. ``pop_item`` and ``clear_session`` rewrite nothing: they record a mark
(``turnstore_session_marks``) that hides items from the session, or, for items still
staged, change what is staged.

Writes are answered exactly: each carries an id recorded with its outcome in the same
transaction, so a write retried after a lost reply is answered with its first outcome.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection

from ..backends.fenced import commit_step_in, refusal
from ..backends.records import StepWrite, TurnEnd
from ..backends.tx import EngineTx, Tx
from ..errors import InvalidMessage
from ..history import decode_rows, window_start
from ..messages import (
    INTERRUPTED,
    AssistantMessage,
    StoredMessage,
    ToolCall,
    ToolResult,
    encode_step,
    encode_user_message,
)
from ..recovery import recover_expired
from .agents_items import (
    Item,
    Piece,
    assistant_items,
    call_arguments,
    call_data,
    call_id_of,
    call_item,
    call_name,
    content_of,
    in_step_order,
    item_kind,
    output_item,
    user_items,
)

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger("turnstore")
T = TypeVar("T")

#: the ids of the turns a session opens itself
IMPLICIT_PREFIX = "agents_"
#: their content hash: never a message's (keyless submits are never taken for them)
IMPLICIT_HASH = "agents-session"
#: a staged step that a session wrote (its items are shown while a call waits)
STAGED_FLAG = "agents"


def is_implicit(turn_id: str) -> bool:
    return turn_id.startswith(IMPLICIT_PREFIX)


# --- a step in the making ------------------------------------------------------------------


@dataclass
class CallDraft:
    item: Item
    sdk_id: str
    order: int
    stored_id: str | None = None  # the tool row's id: the SDK's, or made unique
    output: Item | None = None
    output_order: int | None = None
    is_error: bool = False


@dataclass
class StepDraft:
    """One step's items, with their places in it, as they come."""

    content: list[tuple[Item, int]] = field(default_factory=list)
    calls: list[CallDraft] = field(default_factory=list)
    next_order: int = 0
    staged: bool = False  # it continues the step staged in the database

    def _take(self) -> int:
        order, self.next_order = self.next_order, self.next_order + 1
        return order

    def add_content(self, item: Item) -> None:
        self.content.append((item, self._take()))

    def add_call(self, item: Item) -> None:
        sdk_id = call_id_of(item, "function_call")
        call_name(item)
        if any(c.sdk_id == sdk_id for c in self.calls):
            raise InvalidMessage(f"two function_calls with call_id {sdk_id!r} in one step")
        self.calls.append(CallDraft(item, sdk_id, self._take()))

    def answer(self, item: Item) -> bool:
        """Take ``item`` (a ``function_call_output``) as the output of its call, if the
        call is in this step."""
        sdk_id = call_id_of(item, "function_call_output")
        for call in self.calls:
            if call.sdk_id == sdk_id:
                if call.output is not None:
                    raise InvalidMessage(f"a second function_call_output for call {sdk_id!r}")
                call.output, call.output_order = item, self._take()
                return True
        return False

    @property
    def unanswered(self) -> list[CallDraft]:
        return [c for c in self.calls if c.output is None]

    @property
    def answered_any(self) -> bool:
        return any(c.output is not None for c in self.calls)

    @property
    def empty(self) -> bool:
        return not self.content and not self.calls

    def close(self, reason: str = INTERRUPTED) -> None:
        """Answer every unanswered call with an error output saying why."""
        for call in self.unanswered:
            call.output = {"type": "function_call_output", "call_id": call.sdk_id, "output": reason}
            call.output_order = self._take()
            call.is_error = True

    def pieces(self) -> list[tuple[Item, int]]:
        found = list(self.content)
        for call in self.calls:
            found.append((call.item, call.order))
            if call.output is not None and call.output_order is not None:
                found.append((call.output, call.output_order))
        return sorted(found, key=lambda pair: pair[1])

    def remove(self, order: int) -> None:
        """Take out the item at ``order`` (the last one: a call has no output after it)."""
        self.content = [(item, o) for item, o in self.content if o != order]
        for call in list(self.calls):
            if call.order == order:
                self.calls.remove(call)
            elif call.output_order == order:
                call.output, call.output_order, call.is_error = None, None, False

    def message(self) -> AssistantMessage:
        calls = []
        for call in self.calls:
            assert call.stored_id is not None
            calls.append(
                ToolCall(
                    call.stored_id,
                    call_name(call.item),
                    call_arguments(call.item),
                    call_data(call.item, call.order),
                )
            )
        content = content_of("assistant", self.content) if self.content else []
        return AssistantMessage(content, tuple(calls))

    def results(self) -> list[ToolResult]:
        out = []
        for call in self.calls:
            if call.output is not None:
                assert call.stored_id is not None
                content = content_of("tool", [(call.output, call.output_order)])
                out.append(ToolResult(call.stored_id, content, call.is_error))
        return out

    def payload(self) -> str:
        """The step as the store stages one (``StepBuffer.checkpoint``'s shape, which a
        takeover commits with "interrupted" results for the unanswered calls)."""
        message = self.message()
        return json.dumps(
            {
                "content": message.content,
                "calls": [
                    {
                        "id": c.id,
                        "name": c.name,
                        "arguments": dict(c.arguments),
                        "provider_data": c.provider_data,
                    }
                    for c in message.tool_calls
                ],
                "results": [
                    {"call_id": r.call_id, "content": r.content, "is_error": r.is_error}
                    for r in self.results()
                ],
                STAGED_FLAG: 1,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> StepDraft:
        draft = cls(staged=True)
        draft.content = [(item, order or 0) for item, order in assistant_items(data["content"])]
        by_stored: dict[str, CallDraft] = {}
        for raw in data["calls"]:
            item, order = call_item(raw["id"], raw["name"], None, raw.get("provider_data"))
            call = CallDraft(item, str(item.get("call_id", raw["id"])), order or 0, raw["id"])
            draft.calls.append(call)
            by_stored[raw["id"]] = call
        for raw in data["results"]:
            call = by_stored[raw["call_id"]]
            call.output, call.output_order = output_item(call.sdk_id, raw["content"])
            call.is_error = bool(raw["is_error"])
        orders = [order for _, order in draft.pieces()]
        draft.next_order = max(orders) + 1 if orders else 0
        return draft


# --- cutting a write into turns and steps ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opener:
    item: Item


Segment = Opener | StepDraft


def segment(items: Sequence[Item], pending: StepDraft | None, *, openers: bool) -> list[Segment]:
    """The turns (``Opener``) and steps of a write, in order. ``pending``: the step staged
    before it, which its first items continue. A user message (when ``openers``) abandons a
    step still waiting for outputs: its calls are answered as interrupted. Refuses (before
    anything is written) a ``function_call_output`` that answers no call of its step."""
    out: list[Segment] = []
    step = pending
    for item in items:
        kind = item_kind(item)
        if kind == "user" and openers:
            if step is not None:
                step.close()
                out.append(step)
                step = None
            out.append(Opener(item))
            continue
        if kind == "output":
            if step is None or not step.answer(item):
                raise InvalidMessage(
                    f"function_call_output for call {item.get('call_id')!r}: no function_call "
                    "of this session waits for it (an output follows its call; a call whose "
                    "output was popped takes no new one: pop the call as well and add both)"
                )
            continue
        if step is not None and step.answered_any and not step.unanswered:
            out.append(step)
            step = None
        if step is None:
            step = StepDraft()
        if kind == "call":
            step.add_call(item)
        else:
            step.add_content(item)
    if step is not None:
        out.append(step)
    return out


def single_step(items: Sequence[Item]) -> StepDraft | None:
    """The write as one complete step (no user message, every call answered), or None."""
    try:
        found = segment(items, None, openers=True)
    except InvalidMessage:
        return None
    if len(found) != 1 or not isinstance(found[0], StepDraft) or found[0].unanswered:
        return None
    return found[0]


# --- outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    value: Any = None  # what a pop returns
    steps: int = 0  # the steps of the turn written to, after the write
    pending: bool = False  # a call of that turn waits for its output


@dataclass(frozen=True, slots=True)
class Busy:
    pass


@dataclass(frozen=True, slots=True)
class NotRunning:
    """The session's own turn has ended or was taken over: ``status`` (``'<status>:...'``
    as the store's fences answer)."""

    status: str


Outcome = Done | Busy | NotRunning


class _Refused(Exception):
    """A fence refused a write: the transaction is rolled back, the caller told why."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True, slots=True)
class Own:
    """The session's own turn (inside ``session.turn(...)``): its id and fencing token."""

    turn_id: str
    epoch: int


@dataclass
class _TurnRef:
    id: str
    epoch: int
    steps: int
    implicit: bool
    running: bool  # False: a finished implicit turn that the next step runs again


# --- the work of one write transaction ------------------------------------------------------


class _Work:
    def __init__(self, store: Store, tx: Tx, cid: str, own: Own | None, approval: float) -> None:
        self.store = store
        self.tx = tx
        self.cid = cid
        self.own = own
        self.approval = approval
        self.turn: _TurnRef | None = None
        self.position = 0
        self.rows = False  # the conversation has messages
        self.taken: set[str] = set()  # call ids given out in this transaction
        self.pending_left = False

    async def begin(self) -> Outcome | None:
        """Take over expired turns, find the turn to write to; Busy if the conversation is
        held by a turn that is not the session's, NotRunning if the session's own ended."""
        tx, cid = self.tx, self.cid
        head = await tx.one("queue_head", conversation_id=cid)
        if head is not None and head.stale:
            await recover_expired(self.store.config, tx, cid)
            head = await tx.one("queue_head", conversation_id=cid)
        last = await tx.one("agents_last_row", conversation_id=cid)
        if last is not None:
            self.position, self.rows = last.position + 1, True
        if self.own is not None:
            state = await tx.one("turn_state", turn_id=self.own.turn_id, conversation_id=cid)
            if state is None:
                return NotRunning("missing:-1")
            if state.status != "running" or state.epoch != self.own.epoch:
                status = state.status if state.status != "running" else "expired"
                return NotRunning(f"{status}:{state.steps}")
            self.turn = _TurnRef(self.own.turn_id, state.epoch, state.steps, False, True)
            return None
        if head is not None:
            if head.status != "running" or not is_implicit(head.id):
                return Busy()
            state = await tx.one("turn_state", turn_id=head.id, conversation_id=cid)
            self.turn = _TurnRef(head.id, state.epoch, state.steps, True, True)
        elif last is not None and is_implicit(last.turn_id) and last.status == "finished":
            self.turn = _TurnRef(last.turn_id, last.epoch, last.steps, True, False)
        return None

    async def pending(self) -> StepDraft | None:
        """The step staged by the session in the running turn, if any."""
        turn = self.turn
        if turn is None or not turn.running:
            return None
        payload = await self.tx.scalar(
            "staged_step", turn_id=turn.id, conversation_id=self.cid, step=turn.steps + 1
        )
        data = json.loads(payload) if isinstance(payload, str | bytes) else payload
        if not isinstance(data, dict) or not data.get(STAGED_FLAG):
            return None
        draft = StepDraft.from_payload(data)
        self.taken.update(c.stored_id for c in draft.calls if c.stored_id)
        return draft

    async def _epoch(self) -> int:
        epoch = await self.tx.scalar("bump_epoch", conversation_id=self.cid)
        if epoch is None:  # the conversation's first turn
            epoch = await self.tx.scalar("first_epoch", conversation_id=self.cid)
        return int(epoch)

    async def open_turn(self, opener: Item | None) -> None:
        """Start an implicit turn, its user message ``opener`` (None: a turn for items that
        came before any user message, opened by an empty one, which holds no item)."""
        turn = self.turn
        if turn is not None and turn.implicit and turn.running:
            await self.end_turn(hand_over=False)
        turn_id = f"{IMPLICIT_PREFIX}{uuid.uuid4().hex}"
        epoch = await self._epoch()
        store, tx = self.store, self.tx
        await tx.run(
            "insert_turn",
            turn_id=turn_id,
            conversation_id=self.cid,
            idempotency_key=None,
            content_hash=IMPLICIT_HASH,
            status="running",
            epoch=epoch,
            owner=store._core.owner,
            lease_seconds=store.config.lease_seconds,
            pending_content=None,
        )
        content = "[]"
        if opener is not None:
            content = encode_user_message(content_of("user", [(opener, None)]), store.limits)
        await tx.run(
            "insert_message",
            conversation_id=self.cid,
            position=self.position,
            role="user",
            turn_id=turn_id,
            step=0,
            step_position=self.position,
            tool_call_count=0,
            content=content,
            tool_call_id=None,
            tool_name=None,
            tool_arguments=None,
            tool_call_data=None,
            is_error=False,
        )
        self.position += 1
        self.rows = True
        self.turn = _TurnRef(turn_id, epoch, 0, True, True)

    async def _ensure_turn(self) -> _TurnRef:
        turn = self.turn
        if turn is None:
            await self.open_turn(None)
            assert self.turn is not None
            return self.turn
        if not turn.running:  # the session's last turn, finished: it runs again
            epoch = await self._epoch()
            await self.tx.run(
                "agents_reopen_turn",
                turn_id=turn.id,
                conversation_id=self.cid,
                epoch=epoch,
                owner=self.store._core.owner,
                lease_seconds=self.store.config.lease_seconds,
            )
            turn.epoch, turn.running = epoch, True
        return turn

    async def _assign_ids(self, draft: StepDraft) -> None:
        """Each call's tool row id: the SDK's, unless the conversation already has it (a
        popped or cleared call added again), then the SDK's with a suffix of its own."""
        limit = self.store.limits.max_id_length
        for call in draft.calls:
            if call.stored_id is not None:
                continue
            candidate = call.sdk_id
            if candidate in self.taken or (
                await self.tx.scalar("call_id_used", conversation_id=self.cid, call_id=candidate)
                is not None
            ):
                tail = f"~{uuid.uuid4().hex[:12]}"
                candidate = call.sdk_id[: limit - len(tail)] + tail
            self.taken.add(candidate)
            call.stored_id = candidate

    async def commit(self, draft: StepDraft) -> None:
        turn = await self._ensure_turn()
        await self._assign_ids(draft)
        store = self.store
        encoded = encode_step(draft.message(), draft.results(), store.limits)
        write = StepWrite.of(
            encoded,
            lock_key=store._backend.lock_key(self.cid),
            conversation_id=self.cid,
            turn_id=turn.id,
            epoch=turn.epoch,
            lease_seconds=store.config.lease_seconds,
            step=turn.steps + 1,
            position=self.position,
        )
        refused = await commit_step_in(self.tx, write)
        if refused is not None:
            raise _Refused(refused)
        turn.steps += 1
        self.position += 1 + len(write.call_ids)
        if draft.staged:
            await self.tx.run("drop_staged_steps", turn_id=turn.id, conversation_id=self.cid)

    async def stage(self, draft: StepDraft) -> None:
        """Keep a step whose calls wait for outputs with its turn, which runs meanwhile."""
        turn = await self._ensure_turn()
        await self._assign_ids(draft)
        closed = StepDraft(list(draft.content), [_copy(c) for c in draft.calls], draft.next_order)
        closed.close()
        encode_step(closed.message(), closed.results(), self.store.limits)  # refuse bad input
        lease = self.approval if turn.implicit else self.store.config.lease_seconds
        if not await self.tx.run(
            "heartbeat",
            turn_id=turn.id,
            conversation_id=self.cid,
            epoch=turn.epoch,
            lease_seconds=lease,
        ):
            raise _Refused(await refusal(self.tx, turn.id, self.cid))
        await self.tx.run(
            "stage_step",
            turn_id=turn.id,
            conversation_id=self.cid,
            step=turn.steps + 1,
            payload=draft.payload(),
        )
        self.pending_left = True

    async def end_turn(self, *, hand_over: bool) -> None:
        """End the running implicit turn (finished); with ``hand_over``, start the next
        turn waiting in line, as a turn that ends does."""
        turn = self.turn
        assert turn is not None and turn.implicit and turn.running
        store, tx = self.store, self.tx
        await tx.run(
            "end_turn",
            turn_id=turn.id,
            conversation_id=self.cid,
            epoch=turn.epoch,
            status="finished",
            error=None,
        )
        await tx.run("drop_staged_steps", turn_id=turn.id, conversation_id=self.cid)
        turn.running = False
        if hand_over:
            end = TurnEnd(
                lock_key=store._backend.lock_key(self.cid),
                conversation_id=self.cid,
                turn_id=turn.id,
                epoch=turn.epoch,
                status="finished",
                error=None,
                final=None,
                lease_seconds=store.config.lease_seconds,
            )
            await store._core.hand_over(tx, end)

    async def apply(self, segments: Sequence[Segment]) -> None:
        for index, seg in enumerate(segments):
            if isinstance(seg, Opener):
                await self.open_turn(seg.item)
            elif seg.unanswered:
                assert index == len(segments) - 1
                await self.stage(seg)
            elif not seg.empty:
                await self.commit(seg)
            elif seg.staged:  # everything staged was popped
                turn = await self._ensure_turn()
                await self.tx.run("drop_staged_steps", turn_id=turn.id, conversation_id=self.cid)

    async def settle(self) -> Done:
        """End the write: an implicit turn with nothing staged is finished (and the
        conversation handed to the next turn waiting in line)."""
        turn = self.turn
        if turn is not None and turn.implicit and turn.running and not self.pending_left:
            await self.end_turn(hand_over=True)
        return Done(None, turn.steps if turn else 0, self.pending_left)

    async def last_visible(self) -> Piece | None:
        """The session's last visible committed item (not hidden by a mark)."""
        tx, cid = self.tx, self.cid
        start_at = await tx.scalar("agents_visible_from", conversation_id=cid) or 0
        pops = {
            (r.position, r.slot)
            for r in await tx.all("agents_pops", conversation_id=cid, from_position=start_at)
        }
        window = 8
        while True:
            start = max(start_at, await window_start(tx, cid, window))
            rows = await tx.all("history", conversation_id=cid, from_position=start)
            for piece in reversed(pieces_of(decode_rows(cid, rows))):
                if (piece.position, piece.slot) not in pops:
                    return piece
            if start <= start_at:
                return None
            window *= 4

    async def mark(self, kind: Literal["pop", "clear"], position: int, slot: int | None) -> None:
        await self.tx.run(
            "agents_insert_mark",
            conversation_id=self.cid,
            kind=kind,
            position=position,
            slot=slot,
        )


def _copy(call: CallDraft) -> CallDraft:
    return CallDraft(
        call.item,
        call.sdk_id,
        call.order,
        call.stored_id,
        call.output,
        call.output_order,
        call.is_error,
    )


# --- the three writes -----------------------------------------------------------------------

Work = Callable[[_Work], Awaitable[Outcome]]


async def _run(
    store: Store, cid: str, write_id: str, own: Own | None, approval: float, body: Work
) -> Outcome:
    """One write transaction: answered from its record if an earlier attempt landed,
    else ``body`` and its record. Retried on transient failures (safe: see above)."""

    async def work(tx: Tx) -> Outcome:
        done = await tx.one("agents_write_outcome", conversation_id=cid, write_id=write_id)
        if done is not None:
            return Done(json.loads(done.outcome) if done.outcome is not None else None)
        state = _Work(store, tx, cid, own, approval)
        outcome = await body(state)
        if isinstance(outcome, Done) and state.rows:
            value = None if outcome.value is None else json.dumps(outcome.value)
            await tx.run(
                "agents_record_write", conversation_id=cid, write_id=write_id, outcome=value
            )
        return outcome

    def attempt() -> Awaitable[Outcome]:
        return store._backend.transaction(cid, work)

    with anyio.CancelScope(shield=True):
        try:
            outcome = await store._backend.retrying(attempt)
        except _Refused as refused:  # rolled back: nothing of the write was kept
            outcome = NotRunning(refused.status)
        except InvalidMessage:
            raise
        except Exception as exc:
            raise store._backend.translate(exc) from exc
    return outcome


async def add(
    store: Store,
    cid: str,
    items: Sequence[Item],
    *,
    write_id: str,
    own: Own | None,
    approval: float,
) -> Outcome:
    async def body(state: _Work) -> Outcome:
        found = await state.begin()
        if found is not None:
            return found
        pending = await state.pending()
        await state.apply(segment(items, pending, openers=own is None))
        return await state.settle()

    return await _run(store, cid, write_id, own, approval, body)


async def pop(
    store: Store, cid: str, *, write_id: str, own: Own | None, approval: float
) -> Outcome:
    async def body(state: _Work) -> Outcome:
        found = await state.begin()
        if found is not None:
            return found
        pending = await state.pending()
        if pending is not None and not pending.empty:
            item, order = pending.pieces()[-1]
            pending.remove(order)
            await state.apply([pending])
            done = await state.settle()
            return Done(item, done.steps, done.pending)
        piece = await state.last_visible()
        if piece is None:
            return Done(None)
        await state.mark("pop", piece.position, piece.slot)
        return Done(piece.item)

    return await _run(store, cid, write_id, own, approval, body)


async def clear(
    store: Store, cid: str, *, write_id: str, own: Own | None, approval: float
) -> Outcome:
    async def body(state: _Work) -> Outcome:
        found = await state.begin()
        if found is not None:
            return found
        pending = await state.pending()
        if pending is not None:  # abandoned: its calls are closed as interrupted
            pending.close()
            await state.apply([pending])
        done = await state.settle()
        if state.position > 0:
            await state.mark("clear", state.position, None)
        return done

    return await _run(store, cid, write_id, own, approval, body)


async def abandon(
    store: Store, cid: str, *, write_id: str, own: Own | None, approval: float
) -> Outcome:
    """Close a call waiting for its output as interrupted (its turn ended, or a new run
    begins): the waiting step is committed with an "interrupted" output for it."""

    async def body(state: _Work) -> Outcome:
        found = await state.begin()
        if found is not None:
            return found
        pending = await state.pending()
        if pending is not None:
            pending.close()
            await state.apply([pending])
        return await state.settle()

    return await _run(store, cid, write_id, own, approval, body)


async def implicit_waiting(store: Store, cid: str) -> bool:
    """Whether a call of one of the session's own (implicit) turns waits for its output."""

    async def attempt() -> bool:
        async with store._backend.read() as tx:
            row = await tx.one("agents_staged", conversation_id=cid)
        return row is not None and is_implicit(row.id)

    return await store._backend.retrying(attempt, write=False)


# --- reading ------------------------------------------------------------------------------


def pieces_of(messages: Sequence[StoredMessage], hide_opener_of: str | None = None) -> list[Piece]:
    """The items of committed messages, in order, each with where it is stored."""
    out: list[Piece] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        if message.role == "user":
            if message.turn_id != hide_opener_of:
                for slot, item in enumerate(user_items(message.content)):
                    out.append(Piece(item, message.position, slot))
            index += 1
            continue
        if message.role != "assistant":  # a tool row outside a step: history has none
            index += 1
            continue
        calls = len(message.tool_calls)
        tools = messages[index + 1 : index + 1 + calls]
        step = [
            Piece(item, message.position, slot, order)
            for slot, (item, order) in enumerate(assistant_items(message.content))
        ]
        outputs = []
        for call, tool in zip(message.tool_calls, tools, strict=False):
            arguments_json = getattr(call, "arguments_json", None)
            item, order = call_item(call.id, call.name, arguments_json, call.provider_data)
            step.append(Piece(item, tool.position, 0, order))
            output, output_order = output_item(str(item.get("call_id", call.id)), tool.content)
            outputs.append(Piece(output, tool.position, 1, output_order))
        out.extend(in_step_order(step + outputs))
        index += 1 + calls
    return out


@asynccontextmanager
async def _snapshot(store: Store) -> AsyncIterator[Tx]:
    """A read transaction that sees one state of the database throughout (SQLite: any
    read transaction; PostgreSQL: REPEATABLE READ)."""
    backend = store._backend
    if backend.dialect != "postgres":
        async with backend.read() as tx:
            yield tx
        return
    conn: AsyncConnection = await backend.engine.connect()
    try:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield EngineTx(conn, backend.statements)
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()


async def read(
    store: Store, cid: str, limit: int | None, *, hide_opener_of: str | None = None
) -> list[Item]:
    """What the session shows: the last ``limit`` visible items (all with None), oldest
    first; a step waiting for outputs last. ``hide_opener_of``: a turn whose user message
    is left out (the input of a run that has not written it yet)."""
    if limit is not None and limit <= 0:
        return []

    async def attempt() -> list[Item]:
        async with _snapshot(store) as tx:
            return await _read(tx, cid, limit, hide_opener_of)

    return await store._backend.retrying(attempt, write=False)


async def _read(tx: Tx, cid: str, limit: int | None, hide_opener_of: str | None) -> list[Item]:
    start_at = await tx.scalar("agents_visible_from", conversation_id=cid) or 0
    waiting: list[Item] = []
    staged = await tx.one("agents_staged", conversation_id=cid)
    if staged is not None:
        data = json.loads(staged.payload) if isinstance(staged.payload, str) else staged.payload
        if isinstance(data, dict) and data.get(STAGED_FLAG):
            waiting = [item for item, _ in StepDraft.from_payload(data).pieces()]
    pops = {
        (r.position, r.slot)
        for r in await tx.all("agents_pops", conversation_id=cid, from_position=start_at)
    }

    def visible(rows: Sequence[Any]) -> list[Item]:
        pieces = pieces_of(decode_rows(cid, rows), hide_opener_of)
        return [p.item for p in pieces if (p.position, p.slot) not in pops]

    if limit is None:
        rows = await tx.all("history", conversation_id=cid, from_position=start_at)
        return visible(rows) + waiting
    need = limit - len(waiting)
    if need <= 0:
        return waiting[-limit:]
    window = need + len(pops) + 2
    while True:
        start = max(start_at, await window_start(tx, cid, window))
        items = visible(await tx.all("history", conversation_id=cid, from_position=start))
        if len(items) >= need or start <= start_at:
            return items[-need:] + waiting
        window *= 4


async def turn_items(store: Store, cid: str, turn_id: str) -> list[Item]:
    """The items of one turn, as stored (marks not applied): its user message and steps."""

    async def attempt() -> list[Item]:
        async with _snapshot(store) as tx:
            rows = await tx.all("history", conversation_id=cid, from_position=0)
        messages = [m for m in decode_rows(cid, rows) if m.turn_id == turn_id]
        return [p.item for p in pieces_of(messages)]

    return await store._backend.retrying(attempt, write=False)


def new_write_id() -> str:
    return uuid.uuid4().hex
