"""A turn in progress: commit steps, finish, fail, interrupt, keep the lease alive.

Every write is one short transaction that checks the turn's fencing token (it is still the
conversation's running turn, with the epoch it claimed) and is shielded from cancellation:
once started it completes, so the caller always knows whether it landed.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import anyio.lowlevel

from . import telemetry
from .backends.fenced import refusal
from .backends.records import StepWrite, TurnEnd
from .backends.tx import Tx
from .core import Core
from .errors import (
    DuplicateTurnWrite,
    IntegrityViolation,
    InvalidMessage,
    LeaseLost,
    OutcomeUnknown,
    StoreUnavailable,
    TurnFinished,
    TurnNotFound,
    WriteNotApplied,
)
from .messages import (
    INTERRUPTED,
    AssistantMessage,
    Content,
    EncodedStep,
    ToolCall,
    ToolResult,
    encode_call,
    encode_result,
    encode_step,
    reasoning_part,
)
from .outcome import TurnOutcome
from .usage import record_usage

if TYPE_CHECKING:
    from decimal import Decimal

    from .usage import UsageRecord

log = logging.getLogger("turnstore")
T = TypeVar("T")

EndStatus = Literal["finished", "failed", "interrupted"]
TERMINAL = frozenset({"finished", "failed", "interrupted", "expired", "refused"})
#: how often a wait on a turn of this process reads the database all the same (it may
#: have been taken over elsewhere)
_LOCAL_RECHECK_S = 2.0


async def wait_for_turn(core: Core, turn_id: str) -> TurnOutcome:
    """Wait until a turn has ended; return its outcome. A turn that runs or waits in this
    process tells its waiters when it ends, without a database read (which is still made
    every ``_LOCAL_RECHECK_S``, in case it was taken over elsewhere); one in another process
    is seen within a poll (0.5 s at most). ``TurnNotFound`` if there is no such turn."""

    async def read() -> Any:
        async with core.backend.read() as tx:
            return await tx.one("turn_info", turn_id=turn_id)

    delay = 0.05
    recheck_at = anyio.current_time() + _LOCAL_RECHECK_S
    while True:
        outcome = core.wakeups.outcome(turn_id)
        if outcome is not None:
            return outcome
        now = anyio.current_time()
        if not core.wakeups.lives_here(turn_id) or now >= recheck_at:
            row = await core.backend.retrying(read, write=False)
            if row is None:
                raise TurnNotFound(f"no turn {turn_id!r}")
            if row.status in TERMINAL:
                return TurnOutcome(row.id, row.status, row.error, row.steps)
            recheck_at = now + _LOCAL_RECHECK_S
        await core.wakeups.sleep_until_ended(turn_id, delay)
        delay = min(delay * 2, 0.5)


class Turn:
    """A handle on one turn. Obtained from ``Store.begin_turn`` or ``Store.turn``.

    ``duplicate`` is True when this submit repeated an earlier one (same idempotency key,
    or the same message within the duplicate window): the handle can ``wait()`` for the
    first submit's outcome but cannot write.
    """

    def __init__(
        self,
        core: Core,
        *,
        turn_id: str,
        conversation_id: str,
        duplicate: bool,
        epoch: int = 0,
        next_position: int = 0,
        status: str = "running",
    ) -> None:
        self._core = core
        self.id = turn_id
        self.conversation_id = conversation_id
        self.duplicate = duplicate
        self.epoch = epoch
        self.status = status
        self.steps = 0
        self._next_position = next_position
        self._call_ids: set[str] = set()
        self._write_lock = anyio.Lock()
        #: a step whose outcome is unknown (its call raised OutcomeUnknown): the next write
        #: learns whether it landed before anything else (``_settle``)
        self._unsettled: StepWrite | None = None
        #: the step buffer whose step is checkpointed and not yet committed: ending the
        #: turn commits it (``_end``)
        self._staged: StepBuffer | None = None
        if not duplicate and status == "running":
            core.wakeups.turn_started(self)

    def __repr__(self) -> str:
        kind = "duplicate of " if self.duplicate else ""
        return f"<Turn {kind}{self.id} conversation={self.conversation_id!r} {self.status}>"

    # --- writing ------------------------------------------------------------------------

    async def commit_step(
        self, message: AssistantMessage, results: Sequence[ToolResult] = ()
    ) -> int:
        """Commit one step atomically: ``message`` with its tool calls and exactly one result
        per call. Returns the step number. Refuses bad input before writing anything."""
        self._check_writable()
        encoded = encode_step(
            message, results, self._core.limits, known_call_ids=frozenset(self._call_ids)
        )
        return await self._commit(encoded)

    def step(self) -> StepBuffer:
        """``async with turn.step() as step:`` collect one model step event by event; it
        commits when the block ends. If the block is cancelled or raises, whatever the step
        produced is committed with an "interrupted" error result for each unanswered call,
        and the turn ends interrupted (cancelled) or failed (exception)."""
        self._check_writable()
        return StepBuffer(self)

    async def finish(
        self,
        final_message: AssistantMessage | str | None = None,
        results: Sequence[ToolResult] = (),
    ) -> None:
        """End the turn successfully. With ``final_message``, commit it as the turn's last
        step in the same transaction: usually the model's answer without tool calls, or a
        step whose calls end the turn (a terminal tool), with one of ``results`` per call
        as in ``commit_step``. One transaction and one round trip for both."""
        self._check_writable()
        encoded = None
        if final_message is not None:
            if isinstance(final_message, str):
                final_message = AssistantMessage(content=final_message)
            encoded = encode_step(
                final_message,
                results,
                self._core.limits,
                known_call_ids=frozenset(self._call_ids),
            )
        elif results:
            raise InvalidMessage("results without a final message: which calls do they answer?")
        await self._end("finished", None, encoded)

    async def fail(self, reason: str) -> None:
        """End the turn as failed, recording ``reason``."""
        self._check_writable()
        await self._end("failed", str(reason), None)

    async def interrupt(self, reason: str = "interrupted") -> None:
        """End the turn as interrupted (the user stopped it, or the runtime shut down)."""
        self._check_writable()
        await self._end("interrupted", str(reason), None)

    async def heartbeat(self) -> None:
        """Extend the lease. Every committed step extends it too. Raises ``LeaseLost`` if
        another turn has taken the conversation over."""
        self._check_writable()
        await self._renew()

    async def _renew(
        self, staged_payload: str | None = None, staged_call_ids: Sequence[str] = ()
    ) -> None:
        """Extend the lease if this turn still holds it and, with ``staged_payload``,
        checkpoint the step in progress in the same transaction. A staged call whose id the
        conversation already used is refused (``InvalidMessage``), nothing staged: the
        turn that took over after a crash could never commit it."""
        core = self._core

        async def renew(tx: Tx) -> str | None:
            if await tx.run(
                "heartbeat",
                turn_id=self.id,
                conversation_id=self.conversation_id,
                epoch=self.epoch,
                lease_seconds=core.config.lease_seconds,
            ):
                if staged_payload is not None:
                    reused = [
                        call_id
                        for call_id in staged_call_ids
                        if await tx.scalar(
                            "call_id_used", conversation_id=self.conversation_id, call_id=call_id
                        )
                        is not None
                    ]
                    if reused:
                        return "reused:" + ",".join(reused)
                    await tx.run(
                        "stage_step",
                        turn_id=self.id,
                        conversation_id=self.conversation_id,
                        step=self.steps + 1,
                        payload=staged_payload,
                    )
                return None
            return await refusal(tx, self.id, self.conversation_id)

        def attempt() -> Awaitable[str | None]:
            return core.backend.transaction(self.conversation_id, renew)

        with anyio.CancelScope(shield=True):
            refused = await self._run_write(attempt, None)
        if refused is not None and refused.startswith("reused:"):
            which = ", ".join(repr(c) for c in refused.partition(":")[2].split(","))
            raise InvalidMessage(
                f"tool call id {which} is already used in conversation "
                f"{self.conversation_id!r}; nothing was checkpointed (call ids must be unique "
                "per conversation)"
            )
        if refused is not None:
            self._raise_not_running(refused.partition(":")[0])

    async def record_usage(
        self,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        cost_usd: Decimal | float | int | str | None = None,
        step: int | None = None,
        model: str | None = None,
        usage_id: str | None = None,
    ) -> UsageRecord:
        """Record what a model call of this turn cost (tokens, and the cost in US dollars):
        ``Store.record_usage`` for this turn. Append-only; ``usage_id`` makes a retry
        exact."""
        return await record_usage(
            self._core.backend,
            self._core.limits,
            self,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_creation_tokens=cache_creation_tokens,
            cost_usd=cost_usd,
            step=step,
            model=model,
            usage_id=usage_id,
        )

    async def wait(self, timeout: float | None = None) -> TurnOutcome:
        """Wait until the turn has ended (for a duplicate: the first submit's turn) and
        return its outcome. Raises ``TimeoutError`` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            return await wait_for_turn(self._core, self.id)

    # --- keepalive ----------------------------------------------------------------------

    async def keep_alive(self) -> None:
        """Renew the lease every ``heartbeat_seconds`` until cancelled or the turn ends.
        ``Store.turn`` runs this in the background for you."""
        interval = self._core.config.heartbeat_seconds
        assert interval is not None  # StoreConfig fills its default in
        while True:
            await anyio.sleep(interval)
            try:
                await self.heartbeat()
            except (LeaseLost, TurnFinished):
                return
            except Exception:  # a transient database error: the next beat retries
                log.warning("turn %s: heartbeat failed", self.id, exc_info=True)

    # --- internals ----------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.duplicate:
            raise DuplicateTurnWrite(
                f"turn {self.id} is a duplicate submit; only its first submitter writes. "
                "Use wait() for its outcome."
            )
        if self.status == "expired":
            self._raise_not_running("expired")
        if self.status != "running":
            raise TurnFinished(f"turn {self.id} has ended ({self.status}); begin a new turn")

    def _write_for(self, encoded: EncodedStep) -> StepWrite:
        core = self._core
        return StepWrite.of(
            encoded,
            lock_key=core.backend.lock_key(self.conversation_id),
            conversation_id=self.conversation_id,
            turn_id=self.id,
            epoch=self.epoch,
            lease_seconds=core.config.lease_seconds,
            step=self.steps + 1,
            position=self._next_position,
        )

    def _committed(self, write: StepWrite) -> int:
        telemetry.steps.add(1)
        self.steps = write.step
        self._next_position += 1 + len(write.call_ids)
        self._call_ids.update(write.call_ids)
        if self._staged is not None:  # the checkpointed step is history now
            self._staged.committed = write.step
            self._staged = None
        return write.step

    async def _commit(self, encoded: EncodedStep) -> int:
        with telemetry.span("commit_step", self.conversation_id, self.id):
            async with _held(self._write_lock):
                self._check_writable()
                return await self._commit_locked(encoded)

    async def _commit_locked(self, encoded: EncodedStep) -> int:
        """Commit a step; the caller holds the write lock."""
        core = self._core
        landed = await self._settle()
        if landed is not None and landed.same_step(encoded):
            return landed.step  # the same write again, after an unknown outcome
        write = self._write_for(encoded)
        with anyio.CancelScope(shield=True):
            try:
                outcome = await self._run_write(lambda: core.backend.commit_step(write), write)
            except OutcomeUnknown:
                self._unsettled = write
                raise
            if outcome is None:
                return self._committed(write)
            status, _, steps = outcome.partition(":")
            if status == "running" and int(steps) == write.step:
                # Step ``write.step`` exists: an earlier attempt of this call landed, its
                # answer lost with the connection, if what is stored there is this write.
                if await self._stored(write):
                    return self._committed(write)
                raise IntegrityViolation(
                    f"turn {self.id}: step {write.step} holds another write than this "
                    "one; nothing was written"
                )
        self._raise_not_running(status)
        raise AssertionError("unreachable")

    async def _stored(self, write: StepWrite) -> bool:
        """Whether ``write`` is in history, read back from the positions it was sent to and
        compared by content (its turn, step, message, call ids, results), never by its step
        number alone."""
        core = self._core
        last = write.position + len(write.call_ids)

        async def read() -> Sequence[Any]:
            async with core.backend.read() as tx:
                return await tx.all(
                    "step_rows",
                    conversation_id=self.conversation_id,
                    first=write.position,
                    last=last,
                )

        with anyio.CancelScope(shield=True):
            rows = await core.backend.retrying(read, write=False)
        return write.matches_rows(rows)

    async def _settle(self) -> StepWrite | None:
        """If a step of this turn has an unknown outcome, learn it: return the step if it
        landed (this handle then counts it), None if it did not or none is unsettled.
        Raises ``WriteNotApplied`` (for the call that wanted to write) while the database
        cannot tell."""
        write = self._unsettled
        if write is None:
            return None
        try:
            landed = await self._stored(write)
        except StoreUnavailable as exc:
            raise WriteNotApplied(
                f"turn {self.id}: whether its step {write.step} landed is still unknown (the "
                f"database is unavailable: {exc}); nothing of this call was written"
            ) from exc
        self._unsettled = None
        if not landed:
            return None
        self._committed(write)
        return write

    async def _run_write(self, attempt: Callable[[], Awaitable[T]], write: StepWrite | None) -> T:
        """Run a write (transient failures retried: see ``Backend.retrying``; the fencing
        token and the step's content make a repeat safe) and translate database errors
        into ours."""
        try:
            return await self._core.backend.retrying(attempt)
        except Exception as exc:
            translated = self._core.backend.translate(exc)
            if (
                isinstance(translated, IntegrityViolation)
                and write is not None
                and "tool_call_id" in str(translated)
            ):
                translated = await self._reused_call_id(write)
            raise translated from exc

    async def _reused_call_id(self, write: StepWrite) -> InvalidMessage:
        """The error for a step refused because one of its call ids is already in the
        conversation, naming that id."""
        core = self._core

        async def used() -> list[str]:
            async with core.backend.read() as tx:
                return [
                    call_id
                    for call_id in write.call_ids
                    if await tx.scalar(
                        "call_id_used", conversation_id=self.conversation_id, call_id=call_id
                    )
                    is not None
                ]

        with anyio.CancelScope(shield=True):
            reused = await core.backend.retrying(used, write=False)
        which = ", ".join(repr(c) for c in reused) or "one of its tool call ids"
        return InvalidMessage(
            f"tool call id {which} is already used in conversation {self.conversation_id!r}; "
            "call ids must be unique per conversation (a provider that sends none, or "
            "reuses them across turns, needs ids made by the runtime: see the README)"
        )

    async def _end(self, status: EndStatus, error: str | None, final: EncodedStep | None) -> None:
        with telemetry.span("end_turn", self.conversation_id, self.id) as span:
            await self._end_traced(status, error, final)
            if span.is_recording():
                span.set_attribute("turnstore.outcome", status)

    async def _end_traced(
        self, status: EndStatus, error: str | None, final: EncodedStep | None
    ) -> None:
        core = self._core
        async with _held(self._write_lock):
            self._check_writable()
            await self._settle()
            staged = self._staged
            if staged is not None:
                # A checkpointed step not committed (its block never got to commit it): its
                # tools ran, so it goes into history before the turn ends, unanswered calls
                # closed as interrupted, as a takeover would commit it.
                closed = encode_step(
                    *staged.closed(INTERRUPTED),
                    core.limits,
                    known_call_ids=frozenset(self._call_ids),
                )
                if final is None:
                    final = closed
                else:
                    await self._commit_locked(closed)
            write = self._write_for(final) if final is not None else None
            end = TurnEnd(
                lock_key=core.backend.lock_key(self.conversation_id),
                conversation_id=self.conversation_id,
                turn_id=self.id,
                epoch=self.epoch,
                status=status,
                error=error,
                final=write,
                lease_seconds=core.config.lease_seconds,
            )

            with anyio.CancelScope(shield=True):
                ended = await self._run_write(
                    lambda: core.backend.end_turn(end, core.hand_over), write
                )
            if ended.refused is not None:
                ended_status = ended.refused.partition(":")[0]
                if ended_status != status:  # not a retry of our own landed write
                    self._raise_not_running(ended_status)
            if write is not None:
                self._committed(write)
            self.status = status
        handed = ended.handed_to is not None and core.wakeups.handed_over(
            self.conversation_id, ended.handed_to
        )
        core.wakeups.turn_ended(
            self.conversation_id,
            TurnOutcome(self.id, status, error, self.steps),
            handed_over=handed,
        )

    async def end_quietly(self, status: EndStatus, error: str) -> None:
        with contextlib.suppress(LeaseLost, TurnFinished):
            await self._end(status, error, None)

    def _raise_not_running(self, status: str) -> None:
        if status in ("expired", "running", "missing"):
            telemetry.lease_losses.add(1)
            self.status = "expired" if status != "missing" else status
            raise LeaseLost(
                f"turn {self.id} lost conversation {self.conversation_id!r}: its lease "
                "expired and another turn took over; nothing was written"
            )
        self.status = status
        raise TurnFinished(f"turn {self.id} has ended ({status}); begin a new turn")


@contextlib.asynccontextmanager
async def _held(lock: anyio.Lock) -> AsyncIterator[None]:
    """``async with lock``, without a trip through the event loop when the lock is free
    (the usual case: one writer per turn). A caller already cancelled stops here, before
    any write starts, as it would at ``async with lock``."""
    await anyio.lowlevel.checkpoint_if_cancelled()
    try:
        lock.acquire_nowait()
    except anyio.WouldBlock:
        await lock.acquire()
    try:
        yield
    finally:
        lock.release()


@dataclass
class StepBuffer:
    """Collects one step's events; see ``Turn.step``."""

    turn: Turn
    content: list[dict[str, Any]] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    results: dict[str, ToolResult] = field(default_factory=dict)
    committed: int | None = None

    def text(self, text: str) -> None:
        """Append assistant text (streamed chunks join into one text part)."""
        if not isinstance(text, str) or "\x00" in text:
            raise InvalidMessage("step.text() takes a string without NUL characters")
        if self.content and self.content[-1].get("type") == "text":
            self.content[-1] = {"type": "text", "text": self.content[-1]["text"] + text}
        else:
            self.content.append({"type": "text", "text": text})

    def reasoning(self, part: Mapping[str, Any]) -> None:
        """Record provider reasoning to send back on replay, in the provider's own shape
        (an Anthropic ``thinking`` block, an OpenAI ``reasoning`` item, ...) or as
        ``{"type": "reasoning", "format": ..., ...}``: see ``store.messages``."""
        if not isinstance(part, Mapping):
            raise InvalidMessage("step.reasoning() takes a mapping")
        self.content.append(reasoning_part(part, "step.reasoning()"))

    def tool_call(
        self,
        call_id: str,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        provider_data: Mapping[str, Any] | None = None,
    ) -> None:
        call = ToolCall(call_id, name, dict(arguments or {}), provider_data)
        limits = self.turn._core.limits
        encode_call(call, limits)  # refuse bad input here, where it was given
        if any(c.id == call_id for c in self.calls) or call_id in self.turn._call_ids:
            raise InvalidMessage(f"duplicate tool call id {call_id!r}")
        if len(self.calls) >= limits.max_tool_calls_per_step:
            raise InvalidMessage(
                f"more than {limits.max_tool_calls_per_step} tool calls in one step"
            )
        self.calls.append(call)

    def tool_result(self, call_id: str, content: Content = "", *, is_error: bool = False) -> None:
        if not any(c.id == call_id for c in self.calls):
            raise InvalidMessage(f"result for {call_id!r}, which is not a tool call of this step")
        if call_id in self.results:
            raise InvalidMessage(f"second result for call {call_id!r}")
        result = ToolResult(call_id, content, is_error)
        encode_result(result, "-", self.turn._core.limits)
        self.results[call_id] = result

    @property
    def unanswered(self) -> list[str]:
        return [c.id for c in self.calls if c.id not in self.results]

    async def checkpoint(self) -> None:
        """Persist what this step has so far, outside history. If this process dies before
        the step commits, the turn that takes the conversation over commits it, closing
        unanswered calls as interrupted: results of tools that ran are not lost."""
        turn = self.turn
        if not self.content and not self.calls:
            return
        payload = json.dumps(
            {
                "content": self.content,
                "calls": [
                    {
                        "id": c.id,
                        "name": c.name,
                        "arguments": dict(c.arguments),
                        "provider_data": None if c.provider_data is None else dict(c.provider_data),
                    }
                    for c in self.calls
                ],
                "results": [
                    {"call_id": r.call_id, "content": r.content, "is_error": r.is_error}
                    for r in self.results.values()
                ],
            }
        )
        with telemetry.span("checkpoint", turn.conversation_id, turn.id):
            await self._checkpoint(payload)

    async def _checkpoint(self, payload: str) -> None:
        turn = self.turn
        async with _held(turn._write_lock):
            turn._check_writable()
            await turn._settle()  # the staged step's number depends on what landed
            await turn._renew(payload, [c.id for c in self.calls])
            turn._staged = self

    def closed(self, reason: str) -> tuple[AssistantMessage, list[ToolResult]]:
        """The step with every unanswered call closed by an error result."""
        results = list(self.results.values()) + [
            ToolResult(cid, reason, is_error=True) for cid in self.unanswered
        ]
        return AssistantMessage(list(self.content), tuple(self.calls)), results

    async def __aenter__(self) -> StepBuffer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        turn = self.turn
        produced = bool(self.content or self.calls)
        if exc is None:
            if produced:
                if self.unanswered:
                    log.warning(
                        "turn %s: step ended without results for %s; recorded as errors",
                        turn.id,
                        self.unanswered,
                    )
                message, results = self.closed("no result was recorded for this tool call")
                # The block ended: its step commits even if a cancellation is already
                # pending (a deadline that passed during its last await).
                with anyio.CancelScope(shield=True):
                    self.committed = await turn.commit_step(message, results)
            return None
        if isinstance(exc, DuplicateTurnWrite):
            return None  # a duplicate's handle writes nothing
        # Anything else, a refused call (InvalidMessage) included: that call recorded
        # nothing, and the step's valid work is committed as it stands (tools that ran had
        # effects), unanswered calls closed as interrupted.
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        with anyio.CancelScope(shield=True):
            if produced and turn.status == "running":
                message, results = self.closed(INTERRUPTED)
                with contextlib.suppress(LeaseLost, TurnFinished):
                    self.committed = await turn.commit_step(message, results)
            if turn.status == "running":
                if cancelled:
                    await turn.end_quietly("interrupted", "cancelled during a step")
                else:
                    await turn.end_quietly("failed", f"{type(exc).__name__}: {exc}")
        return None
