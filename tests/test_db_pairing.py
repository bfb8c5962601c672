"""The database itself refuses broken pairing, from any SQL client (no turnstore code)."""

from __future__ import annotations

import pytest

from store import Store, hooks
from store.backends.tx import Tx

from .conftest import Target

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus

TURN = """
INSERT INTO turnstore_conversations (id) VALUES ('c');
INSERT INTO turnstore_turns (id, conversation_id, content_hash, status, lease_owner,
                             lease_expires_at)
VALUES ('t', 'c', 'h', 'finished', 'sql', 0);
"""

PG_TURN = TURN.replace(
    "lease_expires_at)\nVALUES ('t', 'c', 'h', 'finished', 'sql', 0)",
    "lease_expires_at)\nVALUES ('t', 'c', 'h', 'finished', 'sql', now())",
)


def row(
    position: int,
    role: str,
    step: int,
    step_position: int,
    calls: int = 0,
    call_id: str | None = None,
) -> str:
    tool = f"'{call_id}', 'insertHtml', '{{}}'" if call_id else "NULL, NULL, NULL"
    return (
        "INSERT INTO turnstore_messages (conversation_id, position, role, turn_id, step, "
        "step_position, tool_call_count, content, tool_call_id, tool_name, tool_arguments) "
        f"VALUES ('c', {position}, '{role}', 't', {step}, {step_position}, {calls}, '[]', {tool});"
    )


USER = row(0, "user", 0, 0)
VALID_STEP = [
    row(1, "assistant", 1, 1, 2),
    row(2, "tool", 1, 1, 2, "a"),
    row(3, "tool", 1, 1, 2, "b"),
]


def tx(*statements: str) -> str:
    return "BEGIN;\n" + "\n".join(statements) + "\nCOMMIT;"


async def _setup(target: Target, store: Store) -> None:
    await target.raw_execute(PG_TURN if target.dialect == "postgres" else TURN)


async def test_valid_raw_sql_is_accepted_in_any_row_order(target: Target, store: Store) -> None:
    await _setup(target, store)
    await target.raw_execute(tx(USER, *reversed(VALID_STEP)))
    history = await store.history("c")
    assert [m.role for m in history] == ["user", "assistant", "tool", "tool"]
    assert [c.id for c in history[1].tool_calls] == ["a", "b"]


REFUSED = {
    "orphan result after a user message": [USER, row(1, "tool", 1, 0, 1, "x")],
    "result claiming a step that does not exist": [USER, row(1, "tool", 1, 5, 1, "x")],
    "call without its result": [USER, row(1, "assistant", 1, 1, 2), row(2, "tool", 1, 1, 2, "a")],
    "call with no results at all": [USER, row(1, "assistant", 1, 1, 1)],
    "more results than calls": [USER, *VALID_STEP, row(4, "tool", 1, 1, 2, "c")],
    "second result for one call": [
        USER,
        row(1, "assistant", 1, 1, 2),
        row(2, "tool", 1, 1, 2, "a"),
        row(3, "tool", 1, 1, 2, "a"),
    ],
    "result of another step's call": [
        USER,
        *VALID_STEP,
        row(4, "assistant", 2, 4, 1),
        row(5, "tool", 1, 1, 2, "d"),
    ],
    "a message between a call and its result": [
        USER,
        row(1, "assistant", 1, 1, 1),
        row(2, "user", 0, 2),
        row(3, "tool", 1, 1, 1, "a"),
    ],
    "position gap": [USER, row(2, "assistant", 1, 2, 0)],
    "position gap inside a step": [
        USER,
        row(1, "assistant", 1, 1, 2),
        row(3, "tool", 1, 1, 2, "b"),
    ],
    "position gap inside a step, the last result present": [
        USER,
        row(1, "assistant", 1, 1, 3),
        row(2, "tool", 1, 1, 3, "a"),
        row(4, "tool", 1, 1, 3, "c"),
    ],
    "first message not at position 0": [row(1, "user", 0, 1)],
    "tool row without call id": [USER, row(1, "assistant", 1, 1, 1), row(2, "tool", 1, 1, 1)],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_broken_pairing_is_refused_at_commit(target: Target, store: Store, case: str) -> None:
    await _setup(target, store)
    with pytest.raises(Exception, match=r"(?i)constraint|violat"):
        await target.raw_execute(tx(*REFUSED[case]))
    assert await store.history("c") == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE turnstore_messages SET content = '[]' WHERE position = 0",
        "DELETE FROM turnstore_messages WHERE position = 3",
    ],
)
async def test_committed_history_is_append_only(
    target: Target, store: Store, statement: str
) -> None:
    await _setup(target, store)
    await target.raw_execute(tx(USER, *VALID_STEP))
    with pytest.raises(Exception, match="append-only"):
        await target.raw_execute(statement)
    assert len(await store.history("c")) == 4


async def test_a_second_running_turn_is_refused(target: Target, store: Store) -> None:
    turn = await store.begin_turn("c", "go")
    now = "now()" if target.dialect == "postgres" else "0"
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        await target.raw_execute(
            "INSERT INTO turnstore_turns (id, conversation_id, content_hash, status, "
            f"lease_owner, lease_expires_at) VALUES ('t2', 'c', 'h', 'running', 'sql', {now})"
        )
    await turn.finish()


async def test_a_write_refused_at_commit_leaves_the_writer_usable(store: Store) -> None:
    """A transaction of the store's own writer that breaks a deferred check is refused at
    COMMIT and rolled back; the next write works (the writer is not left mid-transaction)."""
    turn = await store.begin_turn("c", "go")

    async def unanswered_call(tx: Tx) -> None:
        await tx.run(  # an assistant row announcing a call that never gets its row
            "insert_message", conversation_id="c", position=1, role="assistant",
            turn_id=turn.id, step=1, step_position=1, tool_call_count=1, content="[]",
            tool_call_id=None, tool_name=None, tool_arguments=None, tool_call_data=None,
            is_error=False,
        )  # fmt: skip

    with pytest.raises(Exception, match=r"(?i)constraint|violat"):
        await hooks.backend(store).transaction("c", unanswered_call)
    assert [m.role for m in await store.history("c")] == ["user"]
    await turn.finish("still fine")
    assert [m.role for m in await store.history("c")] == ["user", "assistant"]
