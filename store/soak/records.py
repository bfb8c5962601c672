"""The soak's acknowledgement logs: one JSON line per record, one file per worker process.

A worker appends a record for every write the store acknowledged (a claim, a step, a
checkpointed tool result, a finish) *after* the call returned, with ``os.fsync`` before it
counts as logged; and a record for every error it met (expected ones by name, unexpected
ones with their traceback). The supervisor tails the files for its progress display and
reads them whole to verify the database against them.

Record kinds (``"t"``):

- ``start``: a worker process started (``pid``); ``ready``: it opened its store;
  ``exit``: it ended (after SIGTERM)
- ``claim``: ``begin_turn`` returned (``turn``, ``cid``, ``key``, ``dup``)
- ``step``: a step was committed (``turn``, ``cid``, ``step``, ``text``, ``results``: a list
  of ``{"id", "content", "error"}``, ``content`` None for a call the step closed unanswered)
- ``ckpt``: ``await step.checkpoint()`` returned (``turn``, ``cid``, ``call``, ``content``,
  ``error``)
- ``finish``: ``turn.finish()`` returned, or ``store.turn`` finished the turn (``turn``)
- ``taken_over``: ``begin_turn`` raised ``TurnTakenOver`` (``turn``, ``cid``, ``key``)
- ``expected``: a typed error the contract allows (``kind``, ``where``)
- ``answered``: a call that raised ``OutcomeUnknown`` was called again and answered
- ``cancelled``: a turn cancelled at a random point on purpose
- ``unexpected``: any other exception (``where``, ``error``, ``traceback``): a bug
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def conversation_id(run: str, index: int) -> str:
    """The id of the soak's conversation number ``index`` in run ``run``."""
    return f"soak-{run}-c{index}"


def prompt_for(key: str) -> str:
    """The user message submitted with idempotency key ``key``: one prompt per key, so
    that a prompt found twice in a conversation was written twice."""
    return f"soak prompt {key}"


#: record kinds that acknowledge a write: fsync'd before the worker goes on
ACKNOWLEDGEMENTS = frozenset({"claim", "step", "ckpt", "finish", "taken_over"})


class LogWriter:
    """Appends records to one file. Each record is one ``write`` of one line; an
    acknowledgement is also fsync'd before ``write`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: Record) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
        os.write(self._fd, line.encode())
        if record.get("t") in ACKNOWLEDGEMENTS:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def parse_lines(data: bytes) -> Iterator[Record]:
    """The records in ``data``. A line that does not parse (the last line of a process
    killed in the middle of writing it) is skipped: its write never counted as logged."""
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def read_records(path: Path) -> list[Record]:
    return list(parse_lines(path.read_bytes())) if path.exists() else []


class Tail:
    """Counts the records of the log files in a directory as they grow (for the progress
    display): reads only the bytes added since the last call, whole lines only."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts: Counter[str] = Counter()
        self.expected: Counter[str] = Counter()
        self._offsets: dict[Path, int] = {}

    def poll(self) -> None:
        for path in sorted(self.directory.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1
            if end == 0:
                continue
            self._offsets[path] = offset + end
            for record in parse_lines(data[:end]):
                kind = str(record.get("t"))
                self.counts[kind] += 1
                if kind == "claim" and record.get("dup"):
                    self.counts["duplicate"] += 1
                if kind == "expected":
                    self.expected[str(record.get("kind"))] += 1
