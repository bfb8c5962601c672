"""``last=N`` windows start on the user message of the turn they would cut: never inside a
turn, so a window replays to every provider as a whole conversation, never empty."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import Store
from store.replay import PROVIDERS

from .helpers import step

# turns: each a list of tool steps (their numbers of calls), then a text answer
TURNS = st.lists(st.lists(st.integers(1, 3), min_size=0, max_size=3), min_size=1, max_size=4)


async def _write(store: Store, conversation_id: str, turns: list[list[int]]) -> None:
    for t, steps in enumerate(turns):
        turn = await store.begin_turn(conversation_id, f"prompt {t}")
        for s, calls in enumerate(steps):
            await turn.commit_step(*step(f"{conversation_id}_{t}_{s}", calls))
        await turn.finish(f"answer {t}")


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(turns=TURNS)
async def test_every_window_starts_on_a_user_message_and_replays(
    store: Store, turns: list[list[int]]
) -> None:
    cid = f"w{abs(hash(str(turns))) % 10**9}_{id(turns)}"
    await _write(store, cid, turns)
    whole = await store.history(cid)
    for last in range(1, len(whole) + 1):
        window = await store.history(cid, last=last)
        assert window[0].role == "user"
        assert len(window) >= last
        assert window == whole[len(whole) - len(window) :]  # a suffix of the history
        # it starts at the turn of the last-th last message, not earlier
        cut = whole[len(whole) - last]
        assert window[0].turn_id == cut.turn_id
        for provider in PROVIDERS:
            body, repairs = await store.replay(cid, provider, last=last)
            assert repairs == [], (provider, last, repairs)
            messages = body.get("messages") or body.get("input") or body.get("contents")
            assert messages, (provider, last, body)
    assert await store.history(cid, last=0) == []


async def test_the_readmes_window_is_not_empty(store: Store) -> None:
    turn = await store.begin_turn("conv-1", "Build a landing page")
    await turn.commit_step(*step("s1", 2))
    await turn.finish("Done: the hero and the footer are in.")
    for last in (1, 2, 3):
        body, repairs = await store.replay("conv-1", "anthropic", last=last)
        assert repairs == []
        assert body["messages"][0]["role"] == "user"
