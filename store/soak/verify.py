"""The soak's verdict, read from the database independently of the workers' write path:
history, the turns table and the invariant checker, against what the workers logged as
acknowledged.

- ``store.checker.check``: no violation;
- every acknowledged step is in history exactly once, with the acknowledged content (its
  turn and step number; assistant text, call ids, results and their error flags);
- every checkpointed tool result is in history (same call id, content, error flag);
- every claim's turn holds its user message once, every key one turn, every prompt is
  stored once, every acknowledged finish is ``finished``;
- no conversation is stuck: a new turn on each starts within lease + 5 s (and finishes);
- every conversation replays for every provider, and the body pairs (``soak.pairing``).

Recoveries are the turns taken over (``expired``). A recovered step is the last step of an
expired turn that no worker acknowledged and that holds results the turn's worker had
checkpointed: takeover recovery committed it; its checkpointed rows are the recovered
results.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..checker import check
from ..errors import StoreError
from ..messages import StoredMessage
from ..replay import PROVIDERS
from ..store import Store
from . import pairing
from .records import Record, prompt_for

STUCK_MARGIN_SECONDS = 5.0


@dataclass
class Verdict:
    violations: list[dict[str, Any]] = field(default_factory=list)
    lost_acknowledged_steps: int = 0
    changed_acknowledged_steps: int = 0
    lost_checkpointed_results: int = 0
    stuck_conversations: int = 0
    recoveries: int = 0
    recovered_steps: int = 0
    recovered_results: int = 0
    turns_by_status: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    checker: dict[str, Any] = field(default_factory=dict)
    replays: int = 0
    slowest_new_turn_seconds: float = 0.0
    database: dict[str, Any] = field(default_factory=dict)
    """What the database held (turns, and each conversation's history in short), for a
    failed run's inspection: the soak's own server is gone by then."""

    def violation(self, kind: str, detail: str, **more: Any) -> None:
        self.violations.append({"kind": kind, "detail": detail, **more})


def _text(message: StoredMessage) -> str:
    return message.text


async def verify(
    store: Store,
    records: Iterable[Record],
    conversations: list[str],
    lease: float,
    *,
    margin: float = STUCK_MARGIN_SECONDS,
) -> Verdict:
    """The verdict on ``conversations``, given every record the workers logged. A new
    turn on a conversation must start within ``lease + margin`` seconds."""
    verdict = Verdict()
    records = list(records)
    # First the new turns: a conversation whose turn expired is taken over (and its
    # checkpointed step committed) by the next submit, so history is read after them.
    await _new_turns(store, conversations, lease + margin, verdict)

    report = await check(store._backend)
    verdict.checker = {
        "conversations": report.conversations,
        "turns": report.turns,
        "messages": report.messages,
        "violations_by_kind": report.counts(),
    }
    for v in report.violations:
        verdict.violation(
            f"checker:{v.kind}", v.detail, conversation=v.conversation_id, position=v.position
        )

    histories = {cid: await store.history(cid) for cid in conversations}
    verdict.messages = sum(len(h) for h in histories.values())
    async with store._backend.read() as tx:
        turns = [t for t in await tx.all("check_turns") if t.conversation_id in histories]
    verdict.turns_by_status = dict(Counter(str(t.status) for t in turns))
    verdict.database = _snapshot(histories, turns)
    verdict.recoveries = verdict.turns_by_status.get("expired", 0)

    _steps_and_checkpoints(records, histories, turns, verdict)
    _claims(records, histories, turns, verdict)
    await _replays(store, conversations, verdict)
    return verdict


async def _new_turns(
    store: Store, conversations: list[str], timeout: float, verdict: Verdict
) -> None:
    slowest = 0.0

    async def one(cid: str) -> None:
        nonlocal slowest
        started = anyio.current_time()
        try:
            turn = await store.begin_turn(
                cid, f"soak final check of {cid}", on_busy="wait", timeout=timeout
            )
            slowest = max(slowest, anyio.current_time() - started)
            await turn.finish("the conversation is alive")
        except (StoreError, TimeoutError) as exc:
            verdict.stuck_conversations += 1
            verdict.violation(
                "stuck_conversation",
                f"no new turn within {timeout:.1f}s: {type(exc).__name__}: {exc}",
                conversation=cid,
            )

    async with anyio.create_task_group() as tg:
        for cid in conversations:
            tg.start_soon(one, cid)
    verdict.slowest_new_turn_seconds = round(slowest, 3)


def _snapshot(histories: dict[str, list[StoredMessage]], turns: list[Any]) -> dict[str, Any]:
    return {
        "turns": [
            {
                "id": t.id,
                "conversation": t.conversation_id,
                "key": t.idempotency_key,
                "status": t.status,
                "steps": t.steps,
            }
            for t in turns
        ],
        "histories": {
            cid: [
                [m.position, m.role, m.turn_id, m.step, m.tool_call_id, m.is_error, m.text[:80]]
                for m in history
            ]
            for cid, history in histories.items()
        },
    }


def _results_of(history: list[StoredMessage], start: int) -> list[StoredMessage]:
    """The tool rows that follow the assistant message at index ``start``."""
    calls = len(history[start].tool_calls)
    return history[start + 1 : start + 1 + calls]


def _steps_and_checkpoints(
    records: list[Record],
    histories: dict[str, list[StoredMessage]],
    turns: list[Any],
    verdict: Verdict,
) -> None:
    steps: dict[tuple[str, int], list[int]] = defaultdict(list)  # (turn, step) -> indexes
    rows_by_call: dict[str, StoredMessage] = {}
    located: dict[tuple[str, int], tuple[str, int]] = {}
    for cid, history in histories.items():
        for i, m in enumerate(history):
            if m.role == "assistant":
                steps[(m.turn_id, m.step)].append(i)
                located[(m.turn_id, m.step)] = (cid, i)
            elif m.role == "tool" and m.tool_call_id is not None:
                rows_by_call[m.tool_call_id] = m

    acknowledged: set[tuple[str, int]] = set()
    for r in records:
        if r.get("t") != "step":
            continue
        key = (r["turn"], int(r["step"]))
        if key in acknowledged:
            continue  # the same step logged twice (a retried write): checked once
        acknowledged.add(key)
        found = steps.get(key, [])
        where = f"turn {r['turn']} step {r['step']} ({r['cid']})"
        if not found:
            verdict.lost_acknowledged_steps += 1
            verdict.violation("lost_acknowledged_step", f"{where} is not in history")
            continue
        if len(found) > 1:
            verdict.violation("step_written_twice", f"{where} is in history {len(found)} times")
        cid, index = located[key]
        problem = _compare_step(histories[cid], index, r)
        if problem:
            verdict.changed_acknowledged_steps += 1
            verdict.violation("changed_acknowledged_step", f"{where}: {problem}")

    checkpointed: dict[str, Record] = {}
    for r in records:
        if r.get("t") == "ckpt":
            checkpointed[r["call"]] = r
    for call, r in checkpointed.items():
        row = rows_by_call.get(call)
        where = f"checkpointed result of {call} (turn {r['turn']}, {r['cid']})"
        if row is None:
            verdict.lost_checkpointed_results += 1
            verdict.violation("lost_checkpointed_result", f"{where} is not in history")
        elif _text(row) != r["content"] or row.is_error != bool(r["error"]):
            verdict.lost_checkpointed_results += 1
            verdict.violation(
                "changed_checkpointed_result",
                f"{where}: stored {_text(row)!r} (error {row.is_error}), checkpointed "
                f"{r['content']!r} (error {r['error']})",
            )

    for t in turns:
        if t.status != "expired" or not t.steps or (t.id, t.steps) in acknowledged:
            continue
        last = located.get((t.id, t.steps))
        if last is None:
            continue
        last_cid, last_index = last
        rows = _results_of(histories[last_cid], last_index)
        recovered = [m for m in rows if m.tool_call_id in checkpointed]
        if recovered:
            verdict.recovered_steps += 1
            verdict.recovered_results += len(recovered)


def _compare_step(history: list[StoredMessage], index: int, record: Record) -> str | None:
    message = history[index]
    if _text(message) != record["text"]:
        return f"assistant text {_text(message)!r}, acknowledged {record['text']!r}"
    expected = record["results"]
    stored = _results_of(history, index)
    ids = [m.tool_call_id for m in stored]
    if ids != [x["id"] for x in expected] or len(message.tool_calls) != len(expected):
        return f"call ids {ids}, acknowledged {[x['id'] for x in expected]}"
    for row, want in zip(stored, expected, strict=True):
        if row.is_error != bool(want["error"]):
            return f"result of {row.tool_call_id}: error flag {row.is_error}"
        if want["content"] is not None and _text(row) != want["content"]:
            return f"result of {row.tool_call_id}: {_text(row)!r}, acknowledged {want['content']!r}"
    return None


def _claims(
    records: list[Record],
    histories: dict[str, list[StoredMessage]],
    turns: list[Any],
    verdict: Verdict,
) -> None:
    status = {t.id: t.status for t in turns}
    turn_of_key = {(t.conversation_id, t.idempotency_key): t.id for t in turns}
    user_rows: dict[str, list[StoredMessage]] = defaultdict(list)
    for cid, history in histories.items():
        prompts = Counter(m.text for m in history if m.role == "user")
        for prompt, n in prompts.items():
            if n > 1:
                verdict.violation(
                    "prompt_stored_twice", f"{prompt!r} is in history {n} times", conversation=cid
                )
        for m in history:
            if m.role == "user":
                user_rows[m.turn_id].append(m)

    claimed: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        kind = r.get("t")
        if kind == "claim":
            claimed[(r["cid"], r["key"])].add(r["turn"])
            if r.get("dup"):
                continue
        elif kind == "taken_over":
            pass
        elif kind == "finish":
            if status.get(r["turn"]) != "finished":
                verdict.violation(
                    "finish_not_kept",
                    f"turn {r['turn']} finished (acknowledged), status {status.get(r['turn'])}",
                )
            continue
        else:
            continue
        rows = user_rows.get(r["turn"], [])
        if len(rows) != 1 or rows[0].text != prompt_for(r["key"]):
            verdict.violation(
                "claimed_prompt_not_kept",
                f"turn {r['turn']} ({kind}, key {r['key']}): {len(rows)} user messages",
                conversation=r["cid"],
            )
    for (cid, key), ids in claimed.items():
        if len(ids) > 1 or turn_of_key.get((cid, key)) not in ids:
            verdict.violation(
                "key_split",
                f"key {key} was answered with turns {sorted(ids)}, the table holds "
                f"{turn_of_key.get((cid, key))}",
                conversation=cid,
            )


async def _replays(store: Store, conversations: list[str], verdict: Verdict) -> None:
    for cid in conversations:
        for provider in PROVIDERS:
            try:
                body, repairs = await store.replay(cid, provider)
            except Exception as exc:
                verdict.violation(
                    "replay_failed", f"{provider}: {type(exc).__name__}: {exc}", conversation=cid
                )
                continue
            verdict.replays += 1
            for problem in pairing.check(provider, body):
                verdict.violation(f"replay_pairing:{provider}", problem, conversation=cid)
            if repairs:
                verdict.violation(
                    f"replay_repaired:{provider}",
                    f"{len(repairs)} repairs, first: {repairs[0]}",
                    conversation=cid,
                )
