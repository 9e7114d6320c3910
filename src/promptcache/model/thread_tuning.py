"""Choosing, by measurement, how many threads short forwards run on.

A decode step of a small model is a few hundred small, memory-bound matmuls.
Whether spreading it over every core pays depends on the machine *right now*:
measured on a 2-core machine, two threads decode ~1.4x faster than one when
both cores are free, but ~3x slower than one when another process keeps a core
busy (each OpenMP barrier then waits for a thread the OS has descheduled). No
fixed default is right on both, so :class:`ThreadCountTuner` keeps measuring.

How: the preferred count serves almost every step; every ``explore_every``-th
step runs once on the alternative instead, and its time is compared with the
step just before it. Neighbouring decode steps differ by one token of context,
so the pair's ratio is a fair comparison even while the context grows, and no
absolute timing is trusted. When the median of the last ``window`` ratios says
the alternative is at least ``min_gain`` faster, the two swap. Exploring costs
at most one step in ``explore_every`` at the slower setting.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque

_EARLY_EXPLORE_EVERY = 4
"""Until the first decision, explore this often, so a short reply already decides."""


class ThreadCountTuner:
    """Keeps the faster of two thread counts for one kind of step, measuring as it goes.

    Call :meth:`next_threads` before a step and :meth:`record` with the same
    count and the step's wall time after it. Safe to call from several threads,
    though the counts it returns only mean something to one caller at a time
    (torch's thread count is process-wide).
    """

    def __init__(
        self,
        preferred: int,
        alternative: int,
        *,
        explore_every: int = 32,
        window: int = 3,
        min_gain: float = 0.10,
    ) -> None:
        if preferred <= 0 or alternative <= 0:
            raise ValueError(f"thread counts must be positive, got {preferred}, {alternative}")
        if preferred == alternative:
            raise ValueError(f"the two thread counts must differ, both are {preferred}")
        if explore_every < 2:
            raise ValueError(f"explore_every must be at least 2, got {explore_every}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        if not 0.0 <= min_gain < 1.0:
            raise ValueError(f"min_gain must be in [0, 1), got {min_gain}")
        self._preferred = preferred
        self._alternative = alternative
        self._explore_every = explore_every
        self._min_gain = min_gain
        self._ratios: deque[float] = deque(maxlen=window)
        self._decided = False
        self._steps_since_explore = 0
        self._last_preferred_seconds: float | None = None
        self._lock = threading.Lock()

    @property
    def preferred(self) -> int:
        """The count currently believed faster."""
        return self._preferred

    def next_threads(self) -> int:
        """The thread count the next timed step should run on."""
        with self._lock:
            interval = self._explore_every if self._decided else _EARLY_EXPLORE_EVERY
            if self._last_preferred_seconds is not None and self._steps_since_explore >= interval:
                return self._alternative
            return self._preferred

    def record(self, threads: int, seconds: float) -> None:
        """Report that a step ran on ``threads`` threads in ``seconds``."""
        if seconds <= 0.0:
            return  # a clock too coarse to compare with
        with self._lock:
            if threads == self._preferred:
                self._last_preferred_seconds = seconds
                self._steps_since_explore += 1
                return
            if threads != self._alternative or self._last_preferred_seconds is None:
                return
            self._ratios.append(seconds / self._last_preferred_seconds)
            self._steps_since_explore = 0
            self._last_preferred_seconds = None  # the next pair starts fresh
            if len(self._ratios) < (self._ratios.maxlen or 1):
                return
            self._decided = True
            if statistics.median(self._ratios) <= 1.0 - self._min_gain:
                self._preferred, self._alternative = self._alternative, self._preferred
                self._ratios.clear()
