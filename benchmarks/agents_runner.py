"""The OpenAI Agents SDK's real ``Runner`` under load, with double submits and cancellations,
on three session setups:

- ``sqlalchemy``: the SDK's ``SQLAlchemySession``, runs as ``Runner.run(agent, text,
  session=session)``;
- ``turnstore-plain``: ``TurnstoreSession`` swapped in, the same plain runs;
- ``turnstore``: ``TurnstoreSession`` with its turn wrapper: ``async with
  session.turn(text, idempotency_key=key) as run`` around the run (a duplicate awaits the
  first run's outcome instead of running).

    python -m benchmarks.agents_runner [--db URL] [--workers 16] [--sessions 8]
        [--double-submit 0.2] [--cancel 0.1] [--steps 2] [--tool-calls 2] [--think-ms 2]
        [--duration 20] [--systems sqlalchemy,turnstore-plain,turnstore] [--json FILE]

W workers loop for the duration: each picks one of the sessions, makes a question with a
tag of its own, and runs the agent: the model (a scripted ``Model``, stateless, reading the
run's tag and progress from its input) answers with S steps of K parallel calls of a tool
that takes ``--think-ms`` on average, then with a final message. At the double-submit rate
the run is submitted twice at once (one idempotency key); at the cancel rate it is
cancelled at a random point (``Task.cancel()``, as a client that goes away). Workers start
no run after the duration; ``seconds`` is until the last run in flight ended.

Then each session's items are read back and judged: ``duplicate inputs`` (a question stored
more than once), ``interleaved runs`` (a run whose items are not all together: another
run's items came between), ``orphan outputs`` (a ``function_call_output`` with no call of
its id before it), ``unanswered calls``, and ``steps/s``: the model responses stored (tool
steps and answers) per second. Every system gets the same workload (same seed) on its own
schema (PostgreSQL) or file (SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .dbtarget import (
    DEFAULT_DB,
    DbTarget,
    check_schema_name,
    create_pg_schema,
    drop_pg_schema,
    parse_db_url,
    remove_sqlite_files,
)

SYSTEMS = ("sqlalchemy", "turnstore-plain", "turnstore")
TAG = re.compile(r"\brun-[0-9a-f]{12}\b")


@dataclass(frozen=True)
class Params:
    workers: int = 16
    sessions: int = 8
    double_submit: float = 0.2
    cancel: float = 0.1
    steps: int = 2
    tool_calls: int = 2
    think_ms: float = 2.0
    duration: float = 20.0
    seed: int = 7


@dataclass
class Result:
    system: str
    runs_started: int = 0
    runs_completed: int = 0
    runs_cancelled: int = 0
    duplicates_awaited: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stored_responses: int = 0
    seconds: float = 0.0
    duplicate_inputs: int = 0
    interleaved_runs: int = 0
    orphan_outputs: int = 0
    unanswered_calls: int = 0
    runs_stored: int = 0

    @property
    def steps_per_s(self) -> float:
        return self.stored_responses / self.seconds if self.seconds else 0.0


# --- the model and the agent ---------------------------------------------------------------


def _make_agent(params: Params, rng: random.Random) -> Any:
    from agents import Agent, ModelResponse, Usage, function_tool
    from agents.models.interface import Model
    from agents.testing import assistant_message, function_call

    think = params.think_ms / 1000.0

    @function_tool
    async def work(tag: str, step: int, part: int) -> str:
        """One unit of work."""
        await asyncio.sleep(rng.expovariate(1 / think) if think else 0)
        return f"{tag} step {step} part {part} done"

    class TaggedModel(Model):
        """Answers each run from its own input: the run's tag is in its question (the last
        user message), its progress is the outputs after it."""

        async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                               **kwargs: Any) -> Any:  # fmt: skip
            await asyncio.sleep(rng.expovariate(1 / think) if think else 0)
            items = [input] if isinstance(input, str) else list(input)
            asked = max(i for i, item in enumerate(items) if _is_user(item))
            found = TAG.search(str(items[asked].get("content")))
            tag = found.group(0) if found else "run-unknown"
            done = sum(1 for item in items[asked:] if item.get("type") == "function_call_output")
            step = done // max(params.tool_calls, 1)
            if step < params.steps and params.tool_calls:
                output = [
                    function_call(
                        "work",
                        {"tag": tag, "step": step, "part": part},
                        call_id=f"call_{tag}_{step}_{part}",
                    )
                    for part in range(params.tool_calls)
                ]
            else:
                output = [assistant_message(f"{tag} done", item_id=f"msg_{tag}")]
            return ModelResponse(output=output, usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("this benchmark runs Runner.run")

    return Agent(name="worker", model=TaggedModel(), tools=[work])


def _is_user(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") == "user"


# --- the sessions -----------------------------------------------------------------------------


@asynccontextmanager
async def _sessions(
    system: str, target: DbTarget, schema: str, count: int
) -> AsyncIterator[list[Any]]:
    """``count`` sessions of ``system`` on a namespace of their own, removed afterwards."""
    if target.backend == "postgres":
        assert target.asyncpg_dsn is not None
        await create_pg_schema(target.asyncpg_dsn, schema)
    else:
        remove_sqlite_files(target.sqlite_file(schema))
    url = target.sqlalchemy_url(schema)
    try:
        if system == "sqlalchemy":
            from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
            from sqlalchemy.ext.asyncio import create_async_engine

            kwargs: dict[str, Any] = {}
            if target.backend == "postgres":
                kwargs = {
                    "pool_size": 16,
                    "connect_args": {"server_settings": {"search_path": schema}},
                }
            engine = create_async_engine(url, **kwargs)
            try:
                yield [
                    SQLAlchemySession(f"s{n}", engine=engine, create_tables=True)
                    for n in range(count)
                ]
            finally:
                await engine.dispose()
        else:
            from store import Store, StoreConfig
            from store.integrations.openai_agents import TurnstoreSession

            store = await Store.open(
                url,
                schema=schema if target.backend == "postgres" else None,
                config=StoreConfig(busy_timeout=300, lease_seconds=60),
            )
            await store.migrate()  # a scratch schema: every migration (see store_adapter)
            try:
                yield [TurnstoreSession(f"s{n}", store=store) for n in range(count)]
            finally:
                await store.close()
    finally:
        if target.backend == "postgres":
            assert target.asyncpg_dsn is not None
            await drop_pg_schema(target.asyncpg_dsn, schema)
        else:
            remove_sqlite_files(target.sqlite_file(schema))


# --- the load ----------------------------------------------------------------------------------


async def _run_system(system: str, target: DbTarget, params: Params) -> Result:
    from agents import Runner

    result = Result(system)
    rng = random.Random(params.seed)
    agent = _make_agent(params, random.Random(params.seed + 1))
    name = system.replace("-", "_")
    schema = check_schema_name(f"agents_runner_{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    async with _sessions(system, target, schema, params.sessions) as sessions:

        async def submit(session: Any, question: str, key: str) -> None:
            result.runs_started += 1
            try:
                if system == "turnstore":
                    async with session.turn(question, idempotency_key=key) as run:
                        if run.duplicate:
                            result.runs_started -= 1
                            result.duplicates_awaited += 1
                            await run.wait(timeout=300)
                            return
                        await Runner.run(agent, run.input, session=session)
                else:
                    await Runner.run(agent, question, session=session)
                result.runs_completed += 1
            except asyncio.CancelledError:
                result.runs_cancelled += 1
                raise
            except Exception as exc:
                result.errors[type(exc).__name__] += 1

        async def one(worker_rng: random.Random) -> None:
            session = worker_rng.choice(sessions)
            tag = f"run-{worker_rng.getrandbits(48):012x}"
            question = f"Please do {tag}"
            copies = 2 if worker_rng.random() < params.double_submit else 1
            tasks = [
                asyncio.ensure_future(submit(session, question, f"key-{tag}"))
                for _ in range(copies)
            ]
            if worker_rng.random() < params.cancel:
                expected = (params.steps + 1) * params.think_ms * 2 / 1000.0
                await asyncio.sleep(worker_rng.uniform(0, expected))
                for task in tasks:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        async def worker(index: int) -> None:
            worker_rng = random.Random(rng.getrandbits(64) + index)
            while time.monotonic() < deadline:
                await one(worker_rng)

        started = time.monotonic()
        deadline = started + params.duration
        await asyncio.gather(*(worker(n) for n in range(params.workers)))
        result.seconds = time.monotonic() - started
        for session in sessions:
            _judge(await session.get_items(), result)
    return result


def _judge(items: Sequence[Any], result: Result) -> None:
    """Count what a session's history shows (see the module's docstring)."""
    places: dict[str, list[int]] = {}
    questions: Counter[str] = Counter()
    issued: set[str] = set()
    answered: set[str] = set()
    for index, item in enumerate(items):
        text = json.dumps(item)
        tag = TAG.search(text)
        if tag is not None:
            places.setdefault(tag.group(0), []).append(index)
        if _is_user(item):
            questions[str(item.get("content"))] += 1
        kind = item.get("type")
        if kind == "function_call":
            issued.add(item["call_id"])
            arguments = json.loads(item.get("arguments") or "{}")
            result.stored_responses += arguments.get("part") == 0  # one per tool step
        elif kind == "function_call_output":
            if item["call_id"] not in issued:
                result.orphan_outputs += 1
            answered.add(item["call_id"])
        elif kind == "message" and item.get("role") == "assistant":
            result.stored_responses += 1
    result.unanswered_calls += len(issued - answered)
    result.duplicate_inputs += sum(n - 1 for n in questions.values() if n > 1)
    result.runs_stored += len(places)
    for spots in places.values():
        if spots[-1] - spots[0] + 1 != len(spots):
            result.interleaved_runs += 1


# --- the command line --------------------------------------------------------------------------


def _table(results: Sequence[Result], params: Params, backend: str) -> str:
    head = (
        f"{backend}: W={params.workers} sessions={params.sessions} S={params.steps} "
        f"K={params.tool_calls} double submits {params.double_submit} cancellations "
        f"{params.cancel} think {params.think_ms} ms, {params.duration:g} s per system\n\n"
        "| system | runs started | completed | cancelled | duplicates awaited | runs stored "
        "| duplicate inputs | interleaved runs | orphan outputs | unanswered calls | steps/s "
        "| seconds | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in results:
        errors = ", ".join(f"{k} {n}" for k, n in r.errors.items()) or "-"
        rows.append(
            f"| {r.system} | {r.runs_started} | {r.runs_completed} | {r.runs_cancelled} | "
            f"{r.duplicates_awaited} | {r.runs_stored} | {r.duplicate_inputs} | "
            f"{r.interleaved_runs} | {r.orphan_outputs} | {r.unanswered_calls} | "
            f"{r.steps_per_s:.0f} | {r.seconds:.1f} | {errors} |"
        )
    return head + "\n".join(rows)


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    d = Params()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.agents_runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--workers", type=int, default=d.workers)
    parser.add_argument("--sessions", type=int, default=d.sessions)
    parser.add_argument("--double-submit", type=_rate, default=d.double_submit)
    parser.add_argument("--cancel", type=_rate, default=d.cancel)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--tool-calls", type=int, default=d.tool_calls)
    parser.add_argument("--think-ms", type=float, default=d.think_ms)
    parser.add_argument("--duration", type=float, default=d.duration)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        parser.error(f"unknown system(s) {unknown}; these run: {', '.join(SYSTEMS)}")
    target = parse_db_url(args.db)
    params = Params(
        args.workers, args.sessions, args.double_submit, args.cancel, args.steps,
        args.tool_calls, args.think_ms, args.duration, args.seed,
    )  # fmt: skip

    from agents import set_tracing_disabled

    set_tracing_disabled(True)
    results = [asyncio.run(_run_system(system, target, params)) for system in systems]
    print(_table(results, params, target.backend))
    if args.json:
        payload = {
            "params": asdict(params),
            "backend": target.backend,
            "results": [{**asdict(r), "steps_per_s": r.steps_per_s} for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
