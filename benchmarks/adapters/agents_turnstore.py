"""``agents-sdk-turnstore``: the OpenAI Agents SDK's session calls of ``agents-sdk``, on
``TurnstoreSession`` (store.integrations.openai_agents) instead of ``SQLAlchemySession``.

A turn is what a runtime using the SDK does with the session's turn wrapper:
``session.begin_turn(text, idempotency_key=key)`` (the store's claim: its queue and its
idempotency, so a double submit's duplicate waits for the first instead of running), then
the same ``add_items`` calls as ``agents-sdk`` — the turn's input alone (recognised as the
turn's user message, not written twice), one call per model step with that step's items in
the Responses shape (assistant message, ``function_call`` per call,
``function_call_output`` per result) — and the turn's end. A cut step writes nothing, as
with the SDK's own sessions; the turn ends interrupted.

One session object per conversation, all on one store (the ``store`` system's settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from store.integrations.openai_agents import SessionTurn, TurnstoreSession

from .agents_sdk import step_items, user_item
from .base import Duplicate, PartialStep, ToolCall, ToolResult
from .store_adapter import StoreAdapter


class _Duplicate(Duplicate):
    def __init__(self, run: SessionTurn) -> None:
        self._run = run

    async def wait(self) -> None:
        await self._run.wait(timeout=300)


class AgentsTurnstoreAdapter(StoreAdapter):
    name: ClassVar[str] = "agents-sdk-turnstore"
    supports_idempotency: ClassVar[bool] = True
    ends_turn_with_last_step: ClassVar[bool] = False

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._sessions: dict[str, TurnstoreSession] = {}

    def _session(self, conversation_id: str) -> TurnstoreSession:
        session = self._sessions.get(conversation_id)
        if session is None:
            session = self._sessions[conversation_id] = TurnstoreSession(
                conversation_id, store=self._store
            )
        return session

    async def begin_turn(  # type: ignore[override]
        self, conversation_id: str, user_text: str, idempotency_key: str | None
    ) -> SessionTurn | Duplicate:
        session = self._session(conversation_id)
        run = await session.begin_turn(user_text, idempotency_key=idempotency_key)
        if run.duplicate:
            return _Duplicate(run)
        await session.add_items([user_item(user_text)])  # type: ignore[list-item]
        return run

    async def commit_step(  # type: ignore[override]
        self,
        turn: SessionTurn,
        assistant_text: str,
        calls: Sequence[ToolCall],
        results: Sequence[ToolResult],
    ) -> None:
        session = self._session(turn.session_id)
        await session.add_items(step_items(assistant_text, calls, results))  # type: ignore[arg-type]

    async def finish_turn(self, turn: SessionTurn) -> None:  # type: ignore[override]
        await turn.finish()

    async def interrupt_turn(  # type: ignore[override]
        self, turn: SessionTurn, partial: PartialStep | None
    ) -> None:
        await turn.interrupt("interrupted by the benchmark")

    async def teardown(self) -> None:
        for session in self._sessions.values():
            await session.aclose()
        self._sessions.clear()
        await super().teardown()
