"""Small helpers shared by the tests."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import anyio

from store import AssistantMessage, Store, StoreConfig, ToolCall, ToolResult, hooks
from store.checker import check

# another process that polls every 3 s: anything that happens sooner was not its poll
SLOW_POLLS = StoreConfig(lease_seconds=30, poll_min_seconds=3, poll_max_seconds=3)


def step(prefix: str, calls: int = 2) -> tuple[AssistantMessage, list[ToolResult]]:
    """A step with ``calls`` parallel tool calls and their results."""
    tool_calls = [ToolCall(f"{prefix}_{i}", "insertHtml", {"i": i}) for i in range(calls)]
    return (
        AssistantMessage(f"{prefix}: working", tool_calls),
        [ToolResult(c.id, f"<p>{c.id}</p>") for c in tool_calls],
    )


async def assert_clean(store: Store) -> None:
    report = await check(hooks.backend(store))
    assert report.ok, report.violations[:10]


async def count_rows(store: Store, conversation_id: str | None = None) -> tuple[int, int]:
    """(turns, messages) in the store, optionally for one conversation."""
    report_turns = 0
    async with hooks.backend(store).read() as tx:
        turns = await tx.all("check_turns")
        messages = await tx.all("check_messages")
    if conversation_id is not None:
        turns = [t for t in turns if t.conversation_id == conversation_id]
        messages = [m for m in messages if m.conversation_id == conversation_id]
    report_turns = len(turns)
    return report_turns, len(messages)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 30.0
) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms): a test that needs another
    task to have reached a state waits for that state, never for a guessed time. The
    timeout only guards against a hang."""
    with anyio.fail_after(timeout):
        while True:
            held = condition()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return
            await anyio.sleep(0.01)


async def queued(store: Store, conversation_id: str) -> int:
    """How many turns wait in line for ``conversation_id``."""
    async with hooks.backend(store).read() as tx:
        turns = await tx.all("check_turns")
    return sum(1 for t in turns if t.conversation_id == conversation_id and t.status == "queued")


async def wait_queued(store: Store, conversation_id: str, count: int) -> None:
    """Wait until ``count`` turns wait in line for ``conversation_id``."""

    async def enough() -> bool:
        return await queued(store, conversation_id) >= count

    await wait_until(enough)


def lingering(store: Store) -> int:
    """How many writes of this store linger in its group commit, waiting to ride in another
    write's batch (``store.group_commit``)."""
    return hooks.group_commit(store).lingering()
