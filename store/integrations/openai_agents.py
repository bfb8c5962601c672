"""``TurnstoreSession``: turnstore as the memory of the OpenAI Agents SDK.

A drop-in ``Session`` (``pip install 'turnstore[agents]'``)::

    from agents import Agent, Runner
    from store.integrations.openai_agents import TurnstoreSession

    session = TurnstoreSession("conv-1", url="postgresql+asyncpg://app@db/app")
    result = await Runner.run(agent, "Hello", session=session)

Every ``add_items`` is one transaction; a ``function_call`` and its ``function_call_output``
are stored as one of turnstore's tool rows, so the database refuses a call without its
output or an output without its call, and ``Store.replay`` builds a request any provider
accepts from a session's conversation. The other items are stored as they came and come
back equal from ``get_items``. ``pop_item`` and ``clear_session`` record marks and never
rewrite history; ``delete_conversation`` (``Store.delete_conversation``) erases it.

``async with session.turn(input, idempotency_key=...) as run`` holds one of the store's
turns for a whole run: concurrent runs on one conversation queue (or are refused with
``ConversationBusy``), and a double submit with the same key runs once — the duplicate gets
``run.duplicate`` and awaits the first run's outcome with ``run.wait()``. Plain
``Runner.run(..., session=session)`` calls without it still get atomic, paired writes, but
no queue and no idempotency: two such runs on one conversation interleave their items, as
with the SDK's own sessions. See ``agents_log`` for how items map onto turns and steps.

One object can be used from several event loops and threads: it opens one store per event
loop (asyncpg connections belong to the loop that opened them), shared by the sessions of
that loop with the same URL, and closed when the loop shuts down (``asyncio.run``) or the
last of those sessions is closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio

try:
    from agents.items import ItemHelpers, TResponseInputItem
    from agents.memory.session_settings import (
        SessionSettings,
        coerce_session_settings,
        resolve_session_limit,
    )
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "store.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'turnstore[agents]'"
    ) from exc

from ..claim import OnBusy
from ..config import StoreConfig
from ..erase import Erased
from ..errors import (
    ConversationBusy,
    InvalidMessage,
    LeaseLost,
    OutcomeUnknown,
    TurnFinished,
)
from ..messages import check_identifier
from ..outcome import TurnOutcome
from ..store import DEFAULT_URL, Store
from ..turn import Turn
from . import agents_log
from .agents_items import Item, content_of, normalized, same

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

log = logging.getLogger("turnstore")
T = TypeVar("T")

__all__ = ["SessionTurn", "TurnstoreSession"]

#: How long a claim waits before it looks for a call of the session's own waiting for its
#: output (which a new input abandons), and then between looks: a claim behind another
#: run is usually answered sooner, and reads nothing more.
_WAITING_CHECK_SECONDS = (1.0, 5.0)

#: The run a task is in (``session.turn(...)``): its writes go to that turn.
_ACTIVE: ContextVar[SessionTurn | None] = ContextVar("turnstore_session_turn", default=None)


# --- one store per event loop -----------------------------------------------------------------


@dataclass(eq=False)
class _Shared:
    """A store opened on one loop for one URL, and the sessions using it there."""

    store: Store | None = None
    opening: asyncio.Future[Store] | None = None
    users: weakref.WeakSet[TurnstoreSession] = field(default_factory=weakref.WeakSet)


@dataclass(eq=False)
class _LoopStores:
    """The stores of one event loop. ``closer`` is an async generator the loop finalizes
    when it shuts down (``loop.shutdown_asyncgens``, which ``asyncio.run`` calls): it closes
    them."""

    shared: dict[tuple[Any, ...], _Shared] = field(default_factory=dict)
    closer: AsyncGenerator[None, None] | None = None

    async def watch(self) -> None:
        if self.closer is None:
            self.closer = _close_at_shutdown(self)
            await self.closer.__anext__()


async def _close_at_shutdown(stores: _LoopStores) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        with _LOOPS_LOCK:
            shared = list(stores.shared.values())
            stores.shared.clear()
        for entry in shared:
            if entry.store is not None:
                await _close_quietly(entry.store)


_LOOPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopStores] = (
    weakref.WeakKeyDictionary()
)
_LOOPS_LOCK = threading.Lock()


async def _finish_mutation(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end even if the caller is cancelled meanwhile (the SDK's own
    sessions do the same): the caller then gets its cancellation, after the write's outcome
    is settled, never a write cut in half. Once cancelled — natively (``Task.cancel()``,
    which no anyio shield stops) or by an anyio scope (which would deliver it again and
    again) — the caller waits behind a shield."""
    task = asyncio.ensure_future(work)
    cancelled: BaseException | None = None
    while not task.done():
        try:
            if cancelled is None:
                await asyncio.wait({task})
            else:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller gets
        raise cancelled
    return task.result()


async def _claim_or_cancel(
    claim: Callable[[], Awaitable[Turn]], interrupt: Callable[[Turn], Coroutine[Any, Any, None]]
) -> Turn:
    """Run ``claim`` in a task of its own. A cancellation of the caller, native
    (``Task.cancel()``) or anyio's, cancels the claim the anyio way — the store's shields
    hold, a submit waiting in line leaves it — and is raised once the claim is over; a turn
    the claim started all the same is ended with ``interrupt``, not left to its lease."""
    scope = anyio.CancelScope()

    async def claiming() -> Turn | None:
        with scope:
            return await claim()
        return None

    task = asyncio.ensure_future(claiming())
    cancelled: BaseException | None = None
    while not task.done():
        try:
            if cancelled is None:
                await asyncio.wait({task})
            else:  # the claim was told: wait for it behind a shield
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
            scope.cancel()
    if cancelled is None:
        handle = task.result()
        assert handle is not None
        return handle
    handle = None if task.cancelled() or task.exception() else task.result()
    if handle is not None and not handle.duplicate and handle.status == "running":
        await _finish_mutation(interrupt(handle))
    raise cancelled


async def _close_quietly(store: Store) -> None:
    try:
        await store.close()
    except Exception:  # closing is best effort: the connections go with the loop anyway
        log.debug("closing a session store failed", exc_info=True)


def _close_elsewhere(loop: asyncio.AbstractEventLoop, store: Store) -> None:
    """Close a store of another loop: on it, if it runs (in another thread); at once, if it
    is stopped and no loop runs in this thread; else at its shutdown, or never (a loop
    closed without shutting down leaves its connections to the garbage collector)."""
    if loop.is_closed():
        return
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(_close_quietly(store), loop)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop.run_until_complete(_close_quietly(store))


def _not_running(turn_id: str, conversation_id: str, status: str) -> Exception:
    state = status.partition(":")[0]
    if state in ("expired", "running", "missing"):
        return LeaseLost(
            f"turn {turn_id} lost conversation {conversation_id!r}: its lease expired and "
            "another turn took over (or the conversation was erased); nothing was written"
        )
    return TurnFinished(f"turn {turn_id} has ended ({state}); begin a new turn")


class TurnstoreSession:
    """A ``Session`` of the OpenAI Agents SDK on turnstore, for the conversation
    ``session_id``.

    ``url``: the database (``postgresql+asyncpg://...`` or ``sqlite+aiosqlite:///path``;
    default ``DEFAULT_URL``), ``schema``, ``config`` and ``pool_size`` as in ``Store.open``;
    or ``store``, an open ``Store`` (then used from its own event loop only, and not closed
    by the session). ``session_settings``: a ``SessionSettings`` or a dict, as the SDK's
    sessions take it. ``approval_timeout``: how long a ``function_call`` written without its
    output outside ``session.turn(...)`` (a tool awaiting approval) holds the conversation
    before another turn may take it over, closing the call as interrupted.

    Constructing one opens nothing: the store is opened on first use.
    """

    def __init__(
        self,
        session_id: str,
        *,
        store: Store | None = None,
        url: str | None = None,
        schema: str | None = None,
        config: StoreConfig | None = None,
        pool_size: int = 10,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        approval_timeout: float = 3600.0,
    ) -> None:
        check_identifier(session_id, "session id", 256)
        if store is not None and (url is not None or schema is not None or config is not None):
            raise ValueError("give either store= or url= (with schema= and config=), not both")
        self.session_id = session_id
        self.session_settings: SessionSettings | None = (
            SessionSettings()
            if session_settings is None
            else coerce_session_settings(session_settings)
        )
        self.approval_timeout = float(approval_timeout)
        self._given = store
        self._given_loop: asyncio.AbstractEventLoop | None = None
        self._url = url or DEFAULT_URL
        self._schema = schema
        self._config = config
        self._pool_size = pool_size
        self._where: tuple[Any, ...] = (
            ("store", id(store))
            if store is not None
            else ("url", self._url, schema, config, pool_size)
        )
        self._closed = False
        #: writes whose outcome is unknown, by what they write: the same call again
        #: reuses the write's id, and is answered exactly
        self._unknown: dict[tuple[str, ...], str] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.session_id!r}>"

    @property
    def conversation_id(self) -> str:
        """The turnstore conversation holding this session's history: its session id."""
        return self.session_id

    # --- the store --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    async def get_store(self) -> Store:
        """The store this session uses on the running event loop (opened on first use):
        for ``replay``, ``history`` and the rest of the store's API."""
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._given is not None:
            if self._given_loop is None:
                self._given_loop = loop
            elif self._given_loop is not loop:
                raise RuntimeError(
                    "this TurnstoreSession was given a Store, which belongs to the event loop "
                    "that opened it; from another loop (Runner.run_sync, a worker thread), "
                    "give the session url= instead: it then opens a store per loop"
                )
            return self._given
        with _LOOPS_LOCK:
            stores = _LOOPS.get(loop)
            if stores is None:
                stores = _LOOPS[loop] = _LoopStores()
            shared = stores.shared.setdefault(self._where, _Shared())
            shared.users.add(self)
        await stores.watch()
        if shared.store is not None:
            return shared.store
        if shared.opening is not None:
            return await asyncio.shield(shared.opening)
        opening: asyncio.Future[Store] = loop.create_future()
        shared.opening = opening
        try:
            store = await Store.open(
                self._url, schema=self._schema, config=self._config, pool_size=self._pool_size
            )
        except BaseException as exc:
            shared.opening = None
            opening.set_exception(exc)
            opening.exception()  # waiters get it; nobody else needs to
            raise
        shared.store = store
        opening.set_result(store)
        return store

    async def aclose(self) -> None:
        """Stop using the session: later calls raise ``RuntimeError``. A store it opened is
        closed once no open session uses it (at the latest when its loop shuts down). A
        store given with ``store=`` is left open."""
        self._closed = True
        here = asyncio.get_running_loop()
        for loop, store in self._release():
            if loop is here:
                await _close_quietly(store)
            elif loop.is_running() or loop.is_closed():
                _close_elsewhere(loop, store)
            else:  # a stopped loop (a thread's, after Runner.run_sync): run it elsewhere
                await asyncio.to_thread(loop.run_until_complete, _close_quietly(store))

    def close(self) -> None:
        """``aclose`` for synchronous callers (as the SDK's ``SQLiteSession.close``). A store
        of a loop running in this thread stays open for its other sessions until the loop
        shuts down (``asyncio.run`` closes it then)."""
        self._closed = True
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, store in self._release(keep=here):
            _close_elsewhere(loop, store)

    def _release(
        self, keep: asyncio.AbstractEventLoop | None = None
    ) -> list[tuple[asyncio.AbstractEventLoop, Store]]:
        """Leave every store this session used; the stores no open session uses any more,
        taken out of the registry (except on ``keep``: left to its loop's shutdown)."""
        unused = []
        with _LOOPS_LOCK:
            for loop, stores in list(_LOOPS.items()):
                shared = stores.shared.get(self._where)
                if shared is None or self not in shared.users:
                    continue
                shared.users.discard(self)
                if shared.users or shared.store is None or loop is keep:
                    continue
                del stores.shared[self._where]
                unused.append((loop, shared.store))
        return unused

    # --- the Session protocol ---------------------------------------------------------------

    async def get_items(self, limit: int | None = None, *, wrapper: Any = None) -> list[Any]:
        """The session's items, oldest first: all of them, or the latest ``limit``
        (``session_settings.limit`` when not given), equal to what was added. A call
        waiting for its output (approval) comes last."""
        store = await self.get_store()
        limit = resolve_session_limit(limit, self.session_settings)
        run = self._active()
        hide = run.turn_id if run is not None and run.awaiting_input else None
        return await agents_log.read(store, self.session_id, limit, hide_opener_of=hide)

    async def add_items(self, items: list[TResponseInputItem], *, wrapper: Any = None) -> None:
        """Append ``items`` in one transaction (see the module's docstring for where they
        go). ``InvalidMessage`` (nothing written) for an item that is not JSON, or a
        ``function_call_output`` that answers no call waiting in this session."""
        self._check_open()
        if isinstance(items, list | tuple) and not items:
            return
        run = self._active()
        if run is not None and run._absorbs(items):
            return  # the run's input: its turn's user message, written when it began
        await self._add(items)

    async def pop_item(self, *, wrapper: Any = None) -> TResponseInputItem | None:
        """Remove the most recent item from what the session shows, and return it (None if
        it shows nothing). History is not rewritten: the pop is recorded (a mark), and two
        sessions popping at once never get the same item. Popping a
        ``function_call_output`` leaves its call without an output until the call is popped
        too (a new output for it is refused)."""
        self._check_open()
        outcome = await self._mutate("pop", agents_log.pop)
        return outcome.value  # type: ignore[no-any-return]

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Hide every item from the session. Nothing is deleted (history is append-only, and
        ``store.history`` still shows it): this is not erasure, ``delete_conversation`` is.
        A call waiting for its output is closed as interrupted first."""
        self._check_open()
        await self._mutate("clear", agents_log.clear)

    # --- beyond the protocol ----------------------------------------------------------------

    async def delete_conversation(self, *, force: bool = False) -> Erased:
        """Erase the session's conversation: every row, in one transaction
        (``Store.delete_conversation``). Refused with ``ConversationInUse`` while a turn
        runs there, unless ``force``."""
        store = await self.get_store()
        return await store.delete_conversation(self.session_id, force=force)

    @asynccontextmanager
    async def turn(
        self,
        input: str | list[TResponseInputItem],
        *,
        idempotency_key: str | None = None,
        on_busy: OnBusy = "wait",
        timeout: float | None = None,
    ) -> AsyncIterator[SessionTurn]:
        """``async with session.turn(input, idempotency_key=key) as run``: one run of the
        agent as one of the store's turns. ``input`` is written now, as the turn's user
        message; pass ``run.input`` to ``Runner.run`` (its first write of it is recognised
        and not written twice). While another run holds the conversation this waits in a
        fair queue for up to ``timeout`` (default ``StoreConfig.busy_timeout``), or with
        ``on_busy="fail"`` is refused at once (``ConversationBusy``). A repeated key gives
        ``run.duplicate``: do not run the agent, ``await run.wait()`` for the first run's
        outcome (``await run.items()`` for what it stored). The turn's lease is renewed
        while the block runs; the turn ends when it does: finished, or interrupted
        (cancelled) or failed (an exception), a call still waiting for its output closed as
        interrupted."""
        store, content, items = await self._prepare(input)
        handle = await self._claim(store, content, idempotency_key, on_busy, timeout)
        run = SessionTurn(self, store, handle, input, items)
        if handle.duplicate:
            yield run
            return
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as keepalive:
                keepalive.start_soon(handle.keep_alive)
                try:
                    yield run
                except Exception as exc:  # re-raised below, once the turn has ended
                    error = exc
                finally:
                    keepalive.cancel_scope.cancel()
                    run._unroute()
                    await run._leave()
        except anyio.get_cancelled_exc_class():
            await _finish_mutation(handle.end_quietly("interrupted", "cancelled"))
            raise
        if error is not None:
            await _finish_mutation(handle.end_quietly("failed", f"{type(error).__name__}: {error}"))
            raise error
        if handle.status == "running":
            await _finish_mutation(handle.finish())

    async def begin_turn(
        self,
        input: str | list[TResponseInputItem],
        *,
        idempotency_key: str | None = None,
        on_busy: OnBusy = "wait",
        timeout: float | None = None,
    ) -> SessionTurn:
        """``turn()`` without the block: the caller ends the run with ``run.finish()``,
        ``run.fail(reason)`` or ``run.interrupt()``, from the same task. Nothing renews the
        lease between writes (each write does): ``turn()`` does, for runs whose model or
        tool calls may outlast ``StoreConfig.lease_seconds``."""
        store, content, items = await self._prepare(input)
        handle = await self._claim(store, content, idempotency_key, on_busy, timeout)
        return SessionTurn(self, store, handle, input, items)

    # --- internals --------------------------------------------------------------------------

    def _active(self) -> SessionTurn | None:
        run = _ACTIVE.get()
        if run is None or run.session_id != self.session_id or run.where != self._where:
            return None
        return run

    async def _prepare(
        self, input: str | list[TResponseInputItem]
    ) -> tuple[Store, list[dict[str, Any]], list[Item]]:
        """The store, the turn's user message (the input's items, as the Runner writes
        them), and those items."""
        self._check_open()
        store = await self.get_store()
        items = normalized(_input_items(input), store.limits)
        if not items:
            raise InvalidMessage("a turn needs input: give a message or a list of items")
        return store, content_of("user", [(item, None) for item in items]), items

    async def _claim(
        self,
        store: Store,
        content: list[dict[str, Any]],
        idempotency_key: str | None,
        on_busy: OnBusy,
        timeout: float | None,
    ) -> Turn:
        """``store.begin_turn``. A new input abandons a call of the session's own turns
        still waiting for its output (closed as interrupted), as any user message does: a
        claim that has to wait looks for one (the abandon hands the conversation over to
        it), one that does not wait reads nothing more."""
        if on_busy == "fail" and await agents_log.implicit_waiting(store, self.session_id):
            await self._mutate("abandon", agents_log.abandon)

        async def abandon_waiting_calls() -> None:
            _, then = _WAITING_CHECK_SECONDS
            while True:
                if await agents_log.implicit_waiting(store, self.session_id):
                    await self._mutate("abandon", agents_log.abandon)
                    return
                await asyncio.sleep(then)

        async def claim() -> Turn:
            if on_busy == "fail":
                return await store.begin_turn(
                    self.session_id, content, idempotency_key=idempotency_key, on_busy="fail"
                )
            # The look starts only if the claim is still waiting after the first delay: a
            # claim answered sooner (nearly all) costs one timer.
            loop = asyncio.get_running_loop()
            watcher: list[asyncio.Task[None]] = []
            timer = loop.call_later(
                _WAITING_CHECK_SECONDS[0],
                lambda: watcher.append(loop.create_task(abandon_waiting_calls())),
            )
            try:
                return await store.begin_turn(
                    self.session_id,
                    content,
                    idempotency_key=idempotency_key,
                    on_busy=on_busy,
                    timeout=timeout,
                )
            finally:
                timer.cancel()
                for task in watcher:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

        async def interrupt(handle: Turn) -> None:
            await handle.end_quietly("interrupted", "cancelled while it began")

        return await _claim_or_cancel(claim, interrupt)

    async def _add(self, items: Sequence[Any]) -> None:
        store = await self.get_store()
        run = self._active()
        if run is not None and not run.duplicate:
            await run._add(items)
            return
        batch = normalized(items, store.limits)
        digest = hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()

        def write(write_id: str) -> Awaitable[agents_log.Outcome]:
            return agents_log.add(
                store,
                self.session_id,
                batch,
                write_id=write_id,
                own=None,
                approval=self.approval_timeout,
            )

        await self._write(store, ("add", digest), write)

    async def _mutate(self, kind: str, op: Any) -> agents_log.Done:
        store = await self.get_store()
        run = self._active()
        own = run.own if run is not None and not run.duplicate else None

        def write(write_id: str) -> Awaitable[agents_log.Outcome]:
            return op(  # type: ignore[no-any-return]
                store,
                self.session_id,
                write_id=write_id,
                own=own,
                approval=self.approval_timeout,
            )

        done = await self._write(store, (kind,), write, own=run if own else None)
        if run is not None and own is not None:
            run._wrote(done)
        return done

    async def _write(
        self,
        store: Store,
        key: tuple[str, ...],
        write: Any,
        *,
        own: SessionTurn | None = None,
    ) -> agents_log.Done:
        """Run a write, waiting while a turn that is not the session's holds the
        conversation (``ConversationBusy`` after ``StoreConfig.busy_timeout``)."""
        write_id = self._unknown.pop(key, None) or agents_log.new_write_id()
        started = anyio.current_time()
        delay = store.config.poll_min_seconds
        while True:
            try:
                # the write completes even if the caller is cancelled meanwhile; the waits
                # between attempts (the conversation busy) are cancelled as any wait is
                outcome = await _finish_mutation(write(write_id))
            except OutcomeUnknown:
                self._unknown[key] = write_id
                raise
            if isinstance(outcome, agents_log.Done):
                return outcome
            if isinstance(outcome, agents_log.NotRunning):
                turn_id = own.turn_id if own is not None else "?"
                raise _not_running(turn_id, self.session_id, outcome.status)
            waited = anyio.current_time() - started
            if waited >= store.config.busy_timeout:
                raise ConversationBusy(self.session_id, waited=waited)
            await anyio.sleep(min(delay, store.config.busy_timeout - waited))
            delay = min(delay * 2, store.config.poll_max_seconds)


def _input_items(input: Any) -> list[Any]:
    """What the Runner writes for ``input``: its items, as ``save_result_to_session`` makes
    them."""
    if isinstance(input, str):
        return [{"content": input, "role": "user"}]
    if not isinstance(input, list):
        raise InvalidMessage(
            f"a turn's input is a string or a list of items, got {type(input).__name__}"
        )
    made: list[Any] = ItemHelpers.input_to_new_input_list(input)
    try:
        from agents.run_internal.items import (
            ensure_input_item_format,
            normalize_input_items_for_api,
        )
    except ImportError:  # another SDK version: the items as given
        return made
    return list(normalize_input_items_for_api([ensure_input_item_format(i) for i in made]))


class SessionTurn:
    """One run held as a turn of the store (``TurnstoreSession.turn``). ``input`` is what to
    pass to ``Runner.run``; ``duplicate`` is True for a repeated idempotency key (then run
    nothing: ``await wait()`` for the first run's outcome, ``await items()`` for what it
    stored)."""

    def __init__(
        self,
        session: TurnstoreSession,
        store: Store,
        handle: Turn,
        input: str | list[Any],
        items: list[Item],
    ) -> None:
        self.session_id = session.session_id
        self.where = session._where
        self.input = input
        self.input_items = items
        self._session = session
        self._store = store
        self.handle = handle
        self.own = agents_log.Own(handle.id, handle.epoch)
        #: the input is written (by the claim) but the Runner has not written it yet: the
        #: session leaves it out of get_items, or the model would see it twice
        self.awaiting_input = not handle.duplicate
        self._fast = True  # every write so far went through the turn handle
        self._waiting = False  # a call of this turn waits for its output
        self._token = None if handle.duplicate else _ACTIVE.set(self)

    def __repr__(self) -> str:
        kind = "duplicate of " if self.duplicate else ""
        return f"<SessionTurn {kind}{self.turn_id} {self.session_id!r}>"

    @property
    def turn_id(self) -> str:
        return self.handle.id

    @property
    def duplicate(self) -> bool:
        return self.handle.duplicate

    @property
    def status(self) -> str:
        return self.handle.status

    async def wait(self, timeout: float | None = None) -> TurnOutcome:
        """The turn's outcome once it has ended (for a duplicate: the first run's)."""
        return await self.handle.wait(timeout)

    async def items(self) -> list[Any]:
        """The items this turn stored: its input, then what the run added."""
        return await agents_log.turn_items(self._store, self.session_id, self.turn_id)

    async def finish(self) -> None:
        """End the run (after ``begin_turn``): finished. Like every end, it completes even
        if the caller is cancelled meanwhile."""
        self._unroute()
        await _finish_mutation(self._end(None, None))

    async def interrupt(self, reason: str = "interrupted") -> None:
        self._unroute()
        await _finish_mutation(self._end("interrupted", reason))

    async def fail(self, reason: str) -> None:
        self._unroute()
        await _finish_mutation(self._end("failed", reason))

    async def _end(
        self, status: Literal["interrupted", "failed"] | None, reason: str | None
    ) -> None:
        await self._leave()
        if self.handle.status != "running":
            return
        if status is None:
            await self.handle.finish()
        else:
            await self.handle.end_quietly(status, reason or status)

    def _unroute(self) -> None:
        """Stop routing the task's writes here (in the caller's own context: a write run
        in a task of its own would change only that task's)."""
        token, self._token = self._token, None
        if token is not None and _ACTIVE.get() is self:
            try:
                _ACTIVE.reset(token)
            except ValueError:  # ended from another context than the one it began in
                _ACTIVE.set(None)

    async def _leave(self) -> None:
        """Close a call still waiting for its output as interrupted."""
        if self._waiting and self.handle.status == "running":
            await self._abandon()

    async def _abandon(self) -> None:
        session = self._session

        def write(write_id: str) -> Awaitable[agents_log.Outcome]:
            return agents_log.abandon(
                self._store,
                self.session_id,
                write_id=write_id,
                own=self.own,
                approval=session.approval_timeout,
            )

        try:
            done = await session._write(self._store, ("abandon",), write, own=self)
        except (LeaseLost, TurnFinished):
            return
        self._wrote(done)

    def _wrote(self, done: agents_log.Done) -> None:
        self._fast = False
        self._waiting = done.pending
        self.handle.steps = max(self.handle.steps, done.steps)
        self.awaiting_input = False

    def _absorbs(self, items: Sequence[Any]) -> bool:
        """Whether ``items`` are the run's input, written by its claim: the Runner's first
        write (any later write is written)."""
        if not self.awaiting_input or self.duplicate:
            return False
        self.awaiting_input = False
        return same(list(items), self.input_items)

    async def _add(self, items: Sequence[Any]) -> None:
        if self._absorbs(items):
            return  # the turn's user message: written when the turn began
        if self._fast and not self._waiting and all(type(i) is dict for i in items):
            # One complete step, as the Runner writes them: the turn's own write, which
            # checks and encodes the items as it stores them (encode_step)
            draft = agents_log.single_step(items)
            if draft is not None:
                for call in draft.calls:
                    call.stored_id = call.sdk_id
                try:
                    await _finish_mutation(
                        self.handle.commit_step(draft.message(), draft.results())
                    )
                    return
                except InvalidMessage:
                    # a call id the conversation already has (a popped call added again),
                    # or bad input: the general path makes ids unique, or refuses
                    pass
        session = self._session
        batch = normalized(items, self._store.limits)
        digest = hashlib.sha256(json.dumps(batch, sort_keys=True).encode()).hexdigest()

        def write(write_id: str) -> Awaitable[agents_log.Outcome]:
            return agents_log.add(
                self._store,
                self.session_id,
                batch,
                write_id=write_id,
                own=self.own,
                approval=session.approval_timeout,
            )

        self._wrote(await session._write(self._store, ("add", digest), write, own=self))
