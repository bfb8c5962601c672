"""What a run records (counts, latencies, lock waits, the ledger of committed steps), the
percentiles computed from it, and process memory figures."""

from __future__ import annotations

import math
import resource
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .checker import Ledger


@dataclass(slots=True)
class RunStats:
    """Filled by the driver while it runs one system."""

    duration: float = 0.0  # the timed window, seconds
    steps_in_window: int = 0  # steps committed before the deadline (the rate's numerator)
    # of those, steps a double submit made twice: the lesser copy's, when both copies ran
    # (a system with idempotent submits runs one, and this stays 0)
    duplicated_steps_in_window: int = 0
    turns_in_window: int = 0
    steps_committed: int = 0  # all steps committed, drain included
    turns_committed: int = 0
    turns_started: int = 0
    double_submits: int = 0  # turns sent twice
    duplicates_refused: int = 0  # begin_turn answered Duplicate
    busy_refused: int = 0  # begin_turn raised TurnRefused
    interrupts: Counter[str] = field(default_factory=Counter)  # by where the cancel landed
    errors: Counter[str] = field(default_factory=Counter)  # by exception type
    step_ms: list[float] = field(default_factory=list)  # step-commit latency
    # turn-start latency: from begin_turn to the turn's handle (its claim, and any wait
    # behind a turn still running on the conversation), for turns that started
    start_ms: list[float] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)

    def rate(self, count: int) -> float:
        return count / self.duration if self.duration > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def peak_rss_mb() -> float:
    """This process's peak resident set size (``ru_maxrss``, KiB on Linux) since it started
    or since ``reset_peak_rss``."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Lower the peak to the current RSS (Linux: ``echo 5 > /proc/self/clear_refs`` resets
    VmHWM, which ``ru_maxrss`` reports). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
