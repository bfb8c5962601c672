"""Erasing a conversation: every row of it goes, in one transaction, and nothing else does;
refused while a turn runs there unless forced; the database lets a DELETE of history through
only inside an erasure (schema version 10)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from store import ConversationInUse, LeaseLost, Store, hooks

from .conftest import Target
from .helpers import assert_clean, count_rows, step

# the core tests: also on the Citus cluster (tests/conftest.py)
pytestmark = pytest.mark.citus

TABLES = (
    "turnstore_messages",
    "turnstore_turns",
    "turnstore_staged_steps",
    "turnstore_session_marks",
    "turnstore_session_writes",
)


async def _rows(store: Store, conversation_id: str) -> dict[str, int]:
    """Rows of each table that belong to ``conversation_id``, read straight from the tables."""
    found = {}
    async with hooks.backend(store).engine.connect() as conn:
        for table in TABLES:
            query = f"SELECT count(*) FROM {table} WHERE conversation_id = :c"
            found[table] = (await conn.execute(text(query), {"c": conversation_id})).scalar()
        conversations = await conn.execute(
            text("SELECT count(*) FROM turnstore_conversations WHERE id = :c"),
            {"c": conversation_id},
        )
        found["turnstore_conversations"] = conversations.scalar()
    return found


async def _two_turns(store: Store, conversation_id: str) -> None:
    for n in range(2):
        async with store.turn(conversation_id, f"prompt {n}", idempotency_key=f"k{n}") as turn:
            await turn.commit_step(*step(f"{conversation_id}_{n}"))


async def test_erasure_removes_every_row_of_the_conversation_and_nothing_else(
    store: Store,
) -> None:
    await _two_turns(store, "gone")
    await _two_turns(store, "kept")
    kept_before = await _rows(store, "kept")

    erased = await store.delete_conversation("gone")

    assert (erased.messages, erased.turns) == (2 * (1 + 3), 2)
    assert erased.existed
    assert set((await _rows(store, "gone")).values()) == {0}
    assert await _rows(store, "kept") == kept_before
    assert await store.history("gone") == []
    await assert_clean(store)


async def test_an_erased_conversation_id_starts_over(store: Store) -> None:
    await _two_turns(store, "again")
    await store.delete_conversation("again")
    async with store.turn("again", "a new start", idempotency_key="k0") as turn:
        assert not turn.duplicate  # the erased turn's key is gone with it
        await turn.commit_step(*step("again_new"))
    history = await store.history("again")
    assert [m.position for m in history] == [0, 1, 2, 3]
    assert history[0].text == "a new start"
    await assert_clean(store)


async def test_erasing_an_unknown_conversation_deletes_nothing_and_may_repeat(
    store: Store,
) -> None:
    await _two_turns(store, "kept")
    for _ in range(2):
        erased = await store.delete_conversation("never-there")
        assert not erased.existed
        assert (erased.messages, erased.turns, erased.session_marks) == (0, 0, 0)
    assert await count_rows(store, "kept") == (2, 8)


async def test_a_running_turn_refuses_the_erasure_unless_forced(store: Store) -> None:
    await _two_turns(store, "busy")
    turn = await store.begin_turn("busy", "still going")
    await turn.commit_step(*step("busy_live"))

    with pytest.raises(ConversationInUse) as refused:
        await store.delete_conversation("busy")
    assert refused.value.live == ((turn.id, "running"),)
    assert "force" in str(refused.value)
    assert await count_rows(store, "busy") == (3, 12)  # nothing deleted

    erased = await store.delete_conversation("busy", force=True)
    assert erased.turns == 3
    with pytest.raises(LeaseLost):
        await turn.commit_step(*step("busy_after"))
    assert await count_rows(store, "busy") == (0, 0)
    await assert_clean(store)


async def test_history_still_refuses_delete_and_update_outside_an_erasure(
    store: Store, target: Target
) -> None:
    await _two_turns(store, "fixed")
    for statement in (
        "DELETE FROM turnstore_messages WHERE conversation_id = 'fixed'",
        "UPDATE turnstore_messages SET content = '[]' WHERE conversation_id = 'fixed'",
    ):
        with pytest.raises(Exception, match="append-only"):
            await target.raw_execute(statement)
    assert await count_rows(store, "fixed") == (2, 8)


async def test_an_erasure_record_lets_a_delete_of_that_conversation_only(
    store: Store, target: Target
) -> None:
    """The protocol any SQL client can follow (and the only one the database accepts): record
    the erasure, delete, remove the record, in one transaction."""
    await _two_turns(store, "one")
    await _two_turns(store, "other")
    with pytest.raises(Exception, match="append-only"):
        await target.raw_execute(
            "BEGIN; INSERT INTO turnstore_erasures VALUES ('one');"
            " DELETE FROM turnstore_messages WHERE conversation_id = 'other'; COMMIT;"
        )
    await target.raw_execute(
        "BEGIN; INSERT INTO turnstore_erasures VALUES ('one');"
        " DELETE FROM turnstore_messages WHERE conversation_id = 'one';"
        " DELETE FROM turnstore_erasures WHERE conversation_id = 'one'; COMMIT;"
    )
    assert await count_rows(store, "one") == (2, 0)
    assert await count_rows(store, "other") == (2, 8)


def _cli(target: Target, *args: str) -> subprocess.CompletedProcess[str]:
    schema = ["--schema", target.schema] if target.schema else []
    return subprocess.run(
        [sys.executable, "-m", "store", "delete", "--db", target.url, *schema, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )


async def test_the_command_line_erases_refuses_and_forces(store: Store, target: Target) -> None:
    await _two_turns(store, "done")
    await _two_turns(store, "live")
    turn = await store.begin_turn("live", "still going")

    done = _cli(target, "--conversation", "done")
    assert done.returncode == 0, done.stderr
    assert "deleted conversation 'done': 8 messages, 2 turns" in done.stdout
    assert await count_rows(store, "done") == (0, 0)

    refused = _cli(target, "--conversation", "live")
    assert refused.returncode == 1
    assert turn.id in refused.stderr and "--force" in refused.stderr
    assert await count_rows(store, "live") == (3, 9)

    forced = _cli(target, "--conversation", "live", "--force")
    assert forced.returncode == 0, forced.stderr
    assert await count_rows(store, "live") == (0, 0)

    unknown = _cli(target, "--conversation", "nobody")
    assert unknown.returncode == 0
    assert "nothing deleted" in unknown.stdout
    await assert_clean(store)
