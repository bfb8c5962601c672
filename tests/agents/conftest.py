"""Fixtures of the tests of ``TurnstoreSession``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import set_tracing_disabled

from store.integrations.openai_agents import TurnstoreSession

from ..conftest import Target
from .helpers import CONFIG, MakeSession

set_tracing_disabled(True)  # the SDK would try to export the runs' traces to OpenAI


@pytest.fixture
async def sessions(target: Target) -> AsyncIterator[MakeSession]:
    """Make sessions on the test's database (closed at the end)."""
    made: list[TurnstoreSession] = []

    def make(session_id: str = "conv", **kwargs: Any) -> TurnstoreSession:
        kwargs.setdefault("config", CONFIG)
        session = TurnstoreSession(session_id, url=target.url, schema=target.schema, **kwargs)
        made.append(session)
        return session

    try:
        yield make
    finally:
        for session in made:
            await session.aclose()
