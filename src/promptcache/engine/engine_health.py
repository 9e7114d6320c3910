"""What a threaded engine reports about itself: the readiness probe's engine part.

Kept apart from ``threaded.py`` so the health figures (and the stall rule) can be
read without the worker machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STALL_SECONDS = 120.0
"""Running requests with no event for this long mean the engine is stuck: a
512-token prefill chunk, the longest step, takes about half a second here."""


@dataclass(frozen=True, kw_only=True)
class EngineHealth:
    """What :meth:`ThreadedEngine.health` reports (the readiness probe's engine part)."""

    workers: int
    workers_alive: int
    running: int
    queue_depth: int
    max_queue: int
    seconds_since_progress: float
    stalled: bool
    """Requests are running but none has produced an event for ``stall_seconds``."""
    closed: bool

    @property
    def ok(self) -> bool:
        return (
            not self.closed
            and not self.stalled
            and self.workers_alive == self.workers
            and self.queue_depth < max(self.max_queue, 1)
        )


__all__ = ["DEFAULT_STALL_SECONDS", "EngineHealth"]
