"""A soak worker: one OS process running agent turns on the soak's conversations.

    python -m store.soak.worker --db URL --log FILE --run RUN --name w0g1 [--schema S]
        [--conversations 12] [--lease 2] [--tasks 3] [--seed N] [--retry-seconds S]

It runs ``--tasks`` concurrent loops. Each loop submits turns with idempotency keys drawn
either from a space that every worker shares (keys of the current two-second window: other
processes submit the same key at the same moment) or of its own; now and then two tasks
submit the same key at once. A turn runs 1-3 steps of 1-3 parallel tool calls, written with
``turn.step()`` (some results checkpointed), ``turn.commit_step`` or ``turn.finish(final,
results)``; some turns are cancelled at a random point. Every write the store acknowledged
is appended to ``--log`` (see ``store.soak.records``) before the worker goes on.

Typed errors the contract allows are counted, not fatal; ``OutcomeUnknown`` is answered by
calling the same write again. Any other exception is a bug: it is logged as
``unexpected`` (and printed to stderr), and the worker goes on. The worker never exits by
itself: it outlives database restarts. SIGTERM makes it finish the turns in flight (for up
to ``GRACE_SECONDS``, then cancel them) and exit; so does the end of its parent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio

from ..config import StoreConfig
from ..errors import (
    ConversationBusy,
    DuplicateTurnWrite,
    LeaseLost,
    OutcomeUnknown,
    StoreUnavailable,
    TurnFinished,
    TurnTakenOver,
    WriteNotApplied,
)
from ..messages import INTERRUPTED, AssistantMessage, ToolCall, ToolResult
from ..store import Store
from ..turn import StepBuffer, Turn
from .records import LogWriter, Record, conversation_id, prompt_for

T = TypeVar("T")

#: the typed errors a turn may meet under faults, most specific first
EXPECTED: tuple[type[BaseException], ...] = (
    TurnTakenOver,
    LeaseLost,
    DuplicateTurnWrite,
    TurnFinished,
    WriteNotApplied,
    OutcomeUnknown,
    StoreUnavailable,
    ConversationBusy,
    TimeoutError,  # turn.wait(timeout=...) on a duplicate handle
)

SHARED_KEYS = 0.35  # share of submits with a key from the space every worker shares
KEY_WINDOW_SECONDS = 2.0
KEYS_PER_WINDOW = 8
LOCAL_DOUBLE_SUBMIT = 0.2  # two tasks of this process submit the same key at once
CANCEL_RATE = 0.12  # turns cancelled at a random point
CHECKPOINT_RATE = 0.6  # tool results followed by ``await step.checkpoint()``
TOOL_ERROR_RATE = 0.1
DUPLICATE_WRITE_RATE = 0.2  # a duplicate handle tries to write (and must be refused)
WRITE_ATTEMPTS = 6  # a write that raised StoreUnavailable is called again up to this often
CLAIM_ATTEMPTS = 5
GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class Plan:
    url: str
    schema: str | None
    run: str
    name: str
    conversations: int
    lease: float
    tasks: int
    seed: int
    retry_seconds: float | None = None  # StoreConfig.retry_seconds; None: the default

    def conversation_for(self, key: str) -> str:
        return conversation_id(self.run, zlib.crc32(key.encode()) % self.conversations)


@dataclass
class _Submit:
    """What one submit got so far: the handle, once ``begin_turn`` returned."""

    how: str = ""  # "begin_turn" (by hand) or "store.turn"
    turn: Turn | None = None
    unknown: bool = False  # an attempt of begin_turn raised OutcomeUnknown
    body_done: bool = False
    finish_logged: bool = False


def expected_kind(exc: BaseException) -> str | None:
    for kind in EXPECTED:
        if isinstance(exc, kind):
            return kind.__name__
    return None


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions of a (nested) exception group, or the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


class Worker:
    def __init__(self, store: Store, log: LogWriter, plan: Plan, stop: anyio.Event) -> None:
        self.store = store
        self.log = log
        self.plan = plan
        self.stop = stop
        self._keys = 0

    # --- logging ------------------------------------------------------------------------

    def record(self, t: str, /, **fields: Any) -> None:
        self.log.write({"t": t, "w": self.plan.name, **fields})

    def error(self, exc: BaseException, where: str, turn: Turn | None = None) -> None:
        """Count an error (of ``turn``, if known): expected ones by kind, anything else as
        a bug. An exception is counted once, however many handlers it passes."""
        about = {"turn": turn.id} if turn is not None else {}
        for leaf in leaves(exc):
            if getattr(leaf, "_soak_counted", False):
                continue
            with contextlib.suppress(AttributeError):
                leaf._soak_counted = True  # type: ignore[attr-defined]
            kind = expected_kind(leaf)
            if kind is not None:
                self.record("expected", kind=kind, where=where, error=str(leaf)[:300], **about)
                continue
            text = "".join(traceback.format_exception(leaf))
            print(f"[{self.plan.name}] unexpected error in {where}:\n{text}", file=sys.stderr)
            self.record(
                "unexpected", where=where, error=repr(leaf)[:500], traceback=text[-4000:], **about
            )

    def step_record(self, turn: Turn, number: int, text: str, results: list[Record]) -> None:
        self.record(
            "step",
            turn=turn.id,
            cid=turn.conversation_id,
            step=number,
            text=text,
            results=results,
        )

    # --- the loops ----------------------------------------------------------------------

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for task in range(self.plan.tasks):
                tg.start_soon(self.loop, task)

    async def loop(self, task: int) -> None:
        rng = random.Random(f"{self.plan.seed}:{task}")
        while not self.stop.is_set():
            key = self.pick_key(rng, task)
            if rng.random() < LOCAL_DOUBLE_SUBMIT:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.submit, key, random.Random(rng.random()))
                    tg.start_soon(self.submit, key, random.Random(rng.random()))
            else:
                await self.submit(key, rng)

    def pick_key(self, rng: random.Random, task: int) -> str:
        if rng.random() < SHARED_KEYS:
            window = int(time.time() / KEY_WINDOW_SECONDS)
            return f"{self.plan.run}-k{window}-{rng.randrange(KEYS_PER_WINDOW)}"
        self._keys += 1
        return f"{self.plan.run}-{self.plan.name}-t{task}-{self._keys}"

    async def submit(self, key: str, rng: random.Random) -> None:
        """One submit of ``key``; whatever it raises is counted here, and after an error
        the task pauses a moment (the database may be away) before its next submit."""
        try:
            await self.one_turn(key, rng)
        except Exception as exc:
            self.error(exc, "turn")
            await anyio.sleep(rng.uniform(0.1, 0.5))

    # --- one turn -----------------------------------------------------------------------

    async def one_turn(self, key: str, rng: random.Random) -> None:
        cid = self.plan.conversation_for(key)
        state = _Submit()
        try:
            await self._one_turn(cid, key, rng, state)
        except Exception as exc:
            self.error(exc, "turn", state.turn)
            raise

    async def _one_turn(self, cid: str, key: str, rng: random.Random, state: _Submit) -> None:
        by_hand = rng.random() < 0.5
        state.how = "begin_turn" if by_hand else "store.turn"
        with anyio.CancelScope() as scope:
            if rng.random() < CANCEL_RATE:
                scope.deadline = anyio.current_time() + rng.uniform(0.0, 1.2)
            for attempt in range(CLAIM_ATTEMPTS):
                try:
                    if by_hand:
                        await self.by_hand(cid, key, rng, state)
                    else:
                        await self.in_context(cid, key, rng, state)
                    break
                except StoreUnavailable as exc:
                    if state.turn is not None or attempt == CLAIM_ATTEMPTS - 1:
                        raise
                    # begin_turn did not answer: submit the same key again (a submit that
                    # landed is answered as the same turn, never a second one)
                    self.error(exc, "begin_turn")
                    state.unknown = state.unknown or isinstance(exc, OutcomeUnknown)
                    await anyio.sleep(rng.uniform(0.2, 0.6) * (attempt + 1))
        if scope.cancelled_caught:
            self.record("cancelled", turn=state.turn.id if state.turn else None, cid=cid)

    def claimed(self, turn: Turn, key: str, state: _Submit) -> None:
        self.record(
            "claim",
            turn=turn.id,
            cid=turn.conversation_id,
            key=key,
            dup=turn.duplicate,
            how=state.how,
        )
        if state.unknown:  # an earlier submit of this key had an unknown outcome
            self.record("answered", where="begin_turn")

    def finished(self, turn: Turn, state: _Submit) -> None:
        if not state.finish_logged:
            state.finish_logged = True
            self.record("finish", turn=turn.id, cid=turn.conversation_id)

    async def begin(self, cid: str, key: str, rng: random.Random) -> Turn:
        try:
            return await self.store.begin_turn(
                cid,
                prompt_for(key),
                idempotency_key=key,
                on_busy="wait",
                timeout=rng.uniform(1, 4) * self.plan.lease,
            )
        except TurnTakenOver as exc:
            self.record("taken_over", turn=exc.turn_id, cid=cid, key=key, status=exc.status)
            raise

    async def by_hand(self, cid: str, key: str, rng: random.Random, state: _Submit) -> None:
        """``begin_turn``, steps, ``finish``; on an error or a cancel, end the turn."""
        turn = await self.begin(cid, key, rng)
        state.turn = turn
        self.claimed(turn, key, state)
        if turn.duplicate:
            await self.as_duplicate(turn, rng)
            return
        try:
            if not await self.steps(turn, rng, state):
                await self.writing(turn.finish, "finish", turn)
                self.finished(turn, state)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self.end_after(turn, exc)
            raise

    async def end_after(self, turn: Turn, exc: BaseException) -> None:
        if turn.status != "running":
            return
        try:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                await turn.interrupt("cancelled")
            else:
                await turn.fail(f"{type(exc).__name__}")
        except Exception as error:
            self.error(error, "end", turn)

    async def in_context(self, cid: str, key: str, rng: random.Random, state: _Submit) -> None:
        """``async with store.turn(...)``: the store keeps the lease and ends the turn."""
        try:
            async with self.store.turn(
                cid,
                prompt_for(key),
                idempotency_key=key,
                on_busy="wait",
                timeout=rng.uniform(1, 4) * self.plan.lease,
            ) as turn:
                state.turn = turn
                self.claimed(turn, key, state)
                if turn.duplicate:
                    await self.as_duplicate(turn, rng)
                    return
                await self.steps(turn, rng, state)
                state.body_done = True
        except TurnTakenOver as exc:
            self.record("taken_over", turn=exc.turn_id, cid=cid, key=key, status=exc.status)
            raise
        except StoreUnavailable as exc:
            began = state.turn
            if began is None or not state.body_done or began.status != "running":
                raise
            # the store's own finish() at the end of the block: call it again
            self.error(exc, "finish", began)
            await self.writing(
                began.finish, "finish", began, unknown=isinstance(exc, OutcomeUnknown)
            )
        began = state.turn
        if began is not None and not began.duplicate and began.status == "finished":
            self.finished(began, state)

    async def as_duplicate(self, turn: Turn, rng: random.Random) -> None:
        if rng.random() < DUPLICATE_WRITE_RATE:
            try:
                await turn.commit_step(AssistantMessage("a duplicate handle must not write"))
            except DuplicateTurnWrite as exc:
                self.error(exc, "duplicate", turn)
            else:
                raise AssertionError(f"duplicate handle of {turn.id} wrote a step")
        try:
            await turn.wait(timeout=rng.uniform(1, 3) * self.plan.lease)
        except TimeoutError as exc:
            self.error(exc, "wait", turn)

    # --- steps --------------------------------------------------------------------------

    async def steps(self, turn: Turn, rng: random.Random, state: _Submit) -> bool:
        """Run 1-3 steps; True if the last one ended the turn (``finish(final, ...)``)."""
        count = rng.randint(1, 3)
        for s in range(1, count + 1):
            how = rng.choice(("buffer", "commit", "finish") if s == count else ("buffer", "commit"))
            if how == "buffer":
                await self.buffered_step(turn, rng, s)
            else:
                answer = how == "finish" and rng.random() < 0.5  # a final answer, no calls
                text, calls, results = self.make_step(turn, rng, s, 0 if answer else None)
                await anyio.sleep(rng.uniform(0, 0.15))  # the tools run
                message = AssistantMessage(text, calls)
                if how == "commit":
                    number = await self.writing(
                        partial(turn.commit_step, message, results), "commit_step", turn
                    )
                    self.step_record(turn, number, text, self.result_records(results))
                else:
                    await self.writing(partial(turn.finish, message, results), "finish", turn)
                    self.step_record(turn, turn.steps, text, self.result_records(results))
                    self.finished(turn, state)
                    return True
            await anyio.sleep(rng.uniform(0, 0.05))  # the model thinks
        return False

    def make_step(
        self, turn: Turn, rng: random.Random, s: int, calls: int | None = None
    ) -> tuple[str, list[ToolCall], list[ToolResult]]:
        n = rng.randint(1, 3) if calls is None else calls
        text = f"step {s} of {turn.id} by {self.plan.name} #{rng.getrandbits(32):08x}"
        tool_calls = [ToolCall(f"{turn.id}-{s}-{k}", "tool", {"k": k}) for k in range(n)]
        results = [
            ToolResult(
                c.id,
                f"result of {c.id} #{rng.getrandbits(32):08x}",
                is_error=rng.random() < TOOL_ERROR_RATE,
            )
            for c in tool_calls
        ]
        return text, tool_calls, results

    @staticmethod
    def result_records(results: list[ToolResult]) -> list[Record]:
        return [{"id": r.call_id, "content": r.content, "error": r.is_error} for r in results]

    async def buffered_step(self, turn: Turn, rng: random.Random, s: int) -> None:
        """``async with turn.step() as step``, checkpointing some results."""
        text, calls, results = self.make_step(turn, rng, s)
        buffer = turn.step()
        logged = False

        def log_if_committed() -> None:
            nonlocal logged
            if buffer.committed is not None and not logged:
                logged = True
                self.step_record(turn, buffer.committed, text, self.buffer_results(buffer))

        try:
            async with buffer as step:
                step.text(text)
                for call in calls:
                    step.tool_call(call.id, call.name, call.arguments)
                for result in results:
                    await anyio.sleep(rng.uniform(0, 0.1))  # the tool runs
                    step.tool_result(result.call_id, result.content, is_error=result.is_error)
                    if rng.random() < CHECKPOINT_RATE:
                        await step.checkpoint()
                        self.record(
                            "ckpt",
                            turn=turn.id,
                            cid=turn.conversation_id,
                            step=turn.steps + 1,
                            call=result.call_id,
                            content=result.content,
                            error=result.is_error,
                        )
        except StoreUnavailable as exc:
            if buffer.committed is not None or turn.status != "running" or not buffer.calls:
                raise
            # the step's own commit raised: call the same write again (unanswered calls are
            # closed as the block closed them: interrupted, on its error path)
            self.error(exc, "step", turn)
            message, closed = buffer.closed(INTERRUPTED)
            with anyio.CancelScope(shield=True):
                buffer.committed = await self.writing(
                    lambda: turn.commit_step(message, closed),
                    "step",
                    turn,
                    unknown=isinstance(exc, OutcomeUnknown),
                )
        finally:
            log_if_committed()

    @staticmethod
    def buffer_results(buffer: StepBuffer) -> list[Record]:
        out: list[Record] = []
        for call in buffer.calls:
            result = buffer.results.get(call.id)
            if result is None:  # closed by the step as an error, in words of its choosing
                out.append({"id": call.id, "content": None, "error": True})
            else:
                out.append({"id": call.id, "content": result.content, "error": result.is_error})
        return out

    async def writing(
        self,
        call: Callable[[], Awaitable[T]],
        where: str,
        turn: Turn,
        *,
        unknown: bool = False,
    ) -> T:
        """Call a write; if it raised ``StoreUnavailable``, call the same write again (an
        unknown outcome is answered exactly), a few times with a short sleep. ``unknown``:
        an earlier call of this write, made elsewhere, raised ``OutcomeUnknown``."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                answer = await call()
            except StoreUnavailable as exc:
                self.error(exc, where, turn)
                unknown = unknown or isinstance(exc, OutcomeUnknown)
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                await anyio.sleep(min(0.25 * 2**attempt, 2.0))
                continue
            if unknown:
                self.record("answered", where=where, turn=turn.id)  # an unknown outcome, settled
            return answer
        raise AssertionError("unreachable")


# --- the process ------------------------------------------------------------------------


async def open_store(plan: Plan, log: LogWriter, stop: anyio.Event) -> Store | None:
    """Open the store, retrying while the database is away (a worker started during an
    outage waits for it). None if told to stop first."""
    config = StoreConfig(lease_seconds=plan.lease, busy_timeout=4 * plan.lease)
    if plan.retry_seconds is not None and hasattr(config, "retry_seconds"):
        config = replace(config, retry_seconds=plan.retry_seconds)
    while not stop.is_set():
        try:
            return await Store.open(plan.url, schema=plan.schema, migrate=False, config=config)
        except Exception as exc:
            kind = expected_kind(exc)
            record: Record = {"t": "expected" if kind else "unexpected", "w": plan.name}
            if kind:
                record.update(kind=kind, where="open")
            else:
                text = "".join(traceback.format_exception(exc))
                print(f"[{plan.name}] unexpected error opening the store:\n{text}", file=sys.stderr)
                record.update(where="open", error=repr(exc)[:500], traceback=text[-4000:])
            log.write(record)
        await anyio.sleep(0.5)
    return None


async def _on_sigterm(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()  # no new turns; those in flight get GRACE_SECONDS to end
            break
    await anyio.sleep(GRACE_SECONDS)
    scope.cancel()


async def _orphaned(stop: anyio.Event, scope: anyio.CancelScope) -> None:
    """Stop at once if the supervisor is gone (the worker was reparented): a soak killed
    without its cleanup leaves no worker behind."""
    parent = os.getppid()
    while True:
        await anyio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()
            scope.cancel()
            return


async def amain(plan: Plan, log_path: Path) -> None:
    log = LogWriter(log_path)
    log.write({"t": "start", "w": plan.name, "pid": os.getpid()})
    stop = anyio.Event()
    async with anyio.create_task_group() as outer:
        with anyio.CancelScope() as work:
            outer.start_soon(_on_sigterm, stop, work)
            outer.start_soon(_orphaned, stop, work)
            store = await open_store(plan, log, stop)
            if store is not None:
                log.write({"t": "ready", "w": plan.name})
                try:
                    await Worker(store, log, plan, stop).run()
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        await store.close()
        outer.cancel_scope.cancel()
    log.write({"t": "exit", "w": plan.name})
    log.close()


def parse(argv: list[str]) -> tuple[Plan, Path]:
    p = argparse.ArgumentParser(prog="python -m store.soak.worker")
    p.add_argument("--db", required=True)
    p.add_argument("--schema", default=None)
    p.add_argument("--log", required=True, type=Path)
    p.add_argument("--run", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--conversations", type=int, default=12)
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-seconds", type=float, default=None)
    a = p.parse_args(argv)
    plan = Plan(
        a.db, a.schema, a.run, a.name, a.conversations, a.lease, a.tasks, a.seed,
        a.retry_seconds,
    )  # fmt: skip
    return plan, a.log


def main(argv: list[str] | None = None) -> None:
    plan, log_path = parse(list(sys.argv[1:] if argv is None else argv))
    anyio.run(amain, plan, log_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no waiting for the threads of a store closed in a hurry


if __name__ == "__main__":
    main()
