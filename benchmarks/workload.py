"""The workload model: parameters, and the turns an agent runtime would produce (user text,
steps of parallel tool calls with realistic HTML payloads), all from seeded random numbers.
The driver that plays it against an adapter is ``benchmarks.driver``."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from .adapters.base import PreloadTurn, ToolCall, ToolResult


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    workers: int = 32
    conversations: int = 64
    steps: int = 2  # S: steps per turn
    tool_calls: int = 3  # K: parallel tool calls per step
    duration: float = 20.0  # seconds per system
    double_submit: float = 0.2  # share of turns sent twice at once
    interrupt: float = 0.1  # share of turns cancelled at a random point inside a step
    think_ms: float = 0.0  # mean model latency per step, and mean tool duration
    preload: int = 0  # messages stored before the run (spread over the conversations)
    seed: int = 1
    pool_size: int = 0  # connections per system; 0 = min(2 * workers, 32)

    def effective_pool_size(self) -> int:
        return self.pool_size or max(2, min(2 * self.workers, 32))


_WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "hero section pricing team contact about features gallery testimonial footer header launch "
    "studio design craft modern bold clean fresh quick build ship grow scale trust customers "
    "partners story mission values journey plans monthly yearly support docs"
).split()
_TAGS = ("section", "div", "article", "aside", "header", "footer")
_TOOLS = ("read_document", "insertHtml", "updateToken", "setStyle", "listSections")


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def html_snippet(rng: random.Random, size: int) -> str:
    """An HTML fragment of about ``size`` bytes, as a site-building tool returns."""
    tag = rng.choice(_TAGS)
    parts = [
        f'<{tag} class="{rng.choice(_WORDS)}-{rng.randrange(100)}" id="s{rng.randrange(10**6)}">'
    ]
    n = len(parts[0])
    while n < size - 20:
        kind = rng.randrange(4)
        if kind == 0:
            piece = f"<h2>{_words(rng, rng.randint(2, 6)).title()}</h2>"
        elif kind == 1:
            piece = f"<p>{_words(rng, rng.randint(8, 40)).capitalize()}.</p>"
        elif kind == 2:
            items = "".join(f"<li>{_words(rng, rng.randint(2, 5))}</li>" for _ in range(3))
            piece = f'<ul class="{rng.choice(_WORDS)}">{items}</ul>'
        else:
            piece = (
                f'<a href="/{rng.choice(_WORDS)}" class="btn btn-{rng.choice(_WORDS)}">'
                f'<img src="/img/{rng.randrange(10**5)}.webp" alt="{_words(rng, 3)}"></a>'
            )
        parts.append(piece)
        n += len(piece)
    parts.append(f"</{tag}>")
    return "".join(parts)


class PayloadPool:
    """Pre-generated HTML snippets, log-uniformly from ``min_bytes`` to ``max_bytes``, and
    short phrases, so that making a step costs the driver little during the timed run."""

    def __init__(self, seed: int, count: int = 256, min_bytes: int = 300, max_bytes: int = 4096):
        rng = random.Random(f"payloads:{seed}")
        ratio = max_bytes / min_bytes
        self.snippets = [
            html_snippet(rng, int(min_bytes * ratio ** rng.random())) for _ in range(count)
        ]
        self.phrases = [_words(rng, rng.randint(4, 16)) for _ in range(count)]

    def pick(self, rng: random.Random) -> str:
        return self.snippets[rng.randrange(len(self.snippets))]

    def phrase(self, rng: random.Random) -> str:
        return self.phrases[rng.randrange(len(self.phrases))]


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One model response: text carrying a unique step token (the checker finds steps by
    it), ``K`` parallel calls, their results, and each tool's duration in seconds."""

    token: str
    assistant_text: str
    calls: tuple[ToolCall, ...]
    results: tuple[ToolResult, ...]
    tool_seconds: tuple[float, ...]


def call_id(rng: random.Random) -> str:
    return f"call_{rng.getrandbits(96):024x}"


def _arguments(rng: random.Random, tool: str, payloads: PayloadPool) -> dict[str, object]:
    """Small JSON arguments; ``insertHtml`` carries up to 600 bytes of HTML."""
    if tool == "insertHtml":
        return {
            "selector": f"#s{rng.randrange(10**6)}",
            "position": "beforeend",
            "html": payloads.pick(rng)[:600],
        }
    if tool == "read_document":
        return {"documentId": f"doc_{rng.getrandbits(32):08x}"}
    if tool == "updateToken":
        return {"token": f"--color-{rng.choice(_WORDS)}", "value": f"#{rng.getrandbits(24):06x}"}
    return {"selector": f".{rng.choice(_WORDS)}", "style": {"padding": f"{rng.randrange(64)}px"}}


class TurnFactory:
    """Makes user texts and steps for one workload."""

    def __init__(self, params: WorkloadParams, payloads: PayloadPool) -> None:
        self.params = params
        self.payloads = payloads

    def user_text(self, rng: random.Random) -> str:
        return (
            f"Build the {self.payloads.phrase(rng)} section of the site "
            f"(request {rng.getrandbits(64):016x})"
        )

    def step(self, rng: random.Random, index: int) -> StepPlan:
        k = self.params.tool_calls
        token = f"step-{rng.getrandbits(64):016x}"
        calls: list[ToolCall] = []
        results: list[ToolResult] = []
        for _ in range(k):
            tool = rng.choice(_TOOLS)
            c = ToolCall(call_id(rng), tool, _arguments(rng, tool, self.payloads))
            calls.append(c)
            results.append(ToolResult(c.id, tool, self.payloads.pick(rng)))
        text = f"[{token}] Step {index + 1}: {self.payloads.phrase(rng)}."
        mean = self.params.think_ms / 1000.0
        seconds = tuple(mean * (0.5 + rng.random()) for _ in range(k))
        return StepPlan(token, text, tuple(calls), tuple(results), seconds)

    def model_seconds(self, rng: random.Random) -> float:
        return self.params.think_ms / 1000.0 * (0.5 + rng.random())


def conversation_ids(params: WorkloadParams) -> list[str]:
    return [f"conv-{i:05d}" for i in range(params.conversations)]


def preload_turns(params: WorkloadParams) -> Iterator[PreloadTurn]:
    """About ``params.preload`` finished messages (user, assistant and tool-result messages
    each count one), spread round-robin over the run's conversations, with small payloads
    (about 300 bytes) so that a million of them load in reasonable time."""
    rng = random.Random(f"preload:{params.seed}")
    small = PayloadPool(params.seed, count=64, min_bytes=200, max_bytes=400)
    factory = TurnFactory(params, small)
    convs = conversation_ids(params)
    per_turn = 1 + params.steps * (1 + params.tool_calls)
    for i in range(max(0, -(-params.preload // per_turn))):
        steps = tuple(
            (s.assistant_text, s.calls, s.results)
            for s in (factory.step(rng, j) for j in range(params.steps))
        )
        yield PreloadTurn(convs[i % len(convs)], factory.user_text(rng), steps)
