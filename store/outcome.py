"""Outcomes: what a claim decided for a submit, and how a turn ended."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claimed:
    turn_id: str
    epoch: int
    next_position: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    turn_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Queued:
    turn_id: str


@dataclass(frozen=True, slots=True)
class TakenOver:
    """The submit's turn was started (its user message written) and has since ended
    without its submitter: taken over while it was away, or ended."""

    turn_id: str
    status: str


class Busy:
    pass


Decision = Claimed | Duplicate | Queued | Busy | TakenOver


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    turn_id: str
    status: str
    error: str | None
    steps: int
