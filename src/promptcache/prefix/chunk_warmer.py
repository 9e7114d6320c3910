"""Pool chunks made and their pages faulted in ahead of need, on one idle-priority thread.

The first write to fresh memory faults each 4 KB page in, and the kernel zeroes it
there. On the reference VM that cost 100-140 ms for the 64 MB of KV a 1,400-token
prompt stores (clear_page under the copy, in perf), against 3 ms for the same copy
into memory written before: a miss's commit paid it on the model thread, after the
first token, holding every decoding stream up meanwhile. A :class:`ChunkWarmer`
makes a pool's next chunks beforehand and touches a byte of every page, on a thread
that runs only on a core nothing else wants (``SCHED_IDLE`` where Linux has it), so
the faults cost idle time instead.

One daemon thread serves every warmer in the process; a warmer's chunks are claimed
by :meth:`ChunkWarmer.take`, and one warmed after its index was claimed is dropped.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable

import torch

__all__ = ["ChunkWarmer"]

_LOG = logging.getLogger(__name__)
_PAGE_BYTES = 4096


class ChunkWarmer:
    """Chunks ``make(index)`` made and touched on the warming thread, claimed by :meth:`take`."""

    def __init__(self, make: Callable[[int], torch.Tensor]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._ready: dict[int, torch.Tensor] = {}
        self._asked: set[int] = set()
        """Indices asked for and not yet claimed (warming, queued or ready)."""

    def ask(self, index: int) -> None:
        """Warm chunk ``index`` in the background, unless asked already."""
        with self._lock:
            if index in self._asked:
                return
            self._asked.add(index)
        _jobs().put((weakref.ref(self), index))  # a warmer dropped meanwhile is skipped

    def take(self, index: int) -> torch.Tensor | None:
        """Chunk ``index`` if it is warm; either way no later warming of it is kept."""
        with self._lock:
            self._asked.discard(index)
            return self._ready.pop(index, None)

    def drop(self) -> None:
        """Forget every warmed chunk (their memory goes back) and every pending ask."""
        with self._lock:
            self._ready.clear()
            self._asked.clear()

    @property
    def ready_bytes(self) -> int:
        """Bytes held by chunks warmed and not yet taken."""
        with self._lock:
            return sum(t.numel() * t.element_size() for t in self._ready.values())

    def _warm(self, index: int) -> None:
        with self._lock:
            if index not in self._asked:
                return  # taken (made by its user) or dropped meanwhile
        chunk = self._make(index)
        pages = chunk.view(-1)[:: max(1, _PAGE_BYTES // chunk.element_size())]
        pages.zero_()  # a write a page: each is faulted in (and zeroed) here
        with self._lock:
            if index in self._asked:
                self._ready[index] = chunk


_Job = tuple["weakref.ref[ChunkWarmer]", int]
_JOBS: queue.SimpleQueue[_Job] | None = None
_START_LOCK = threading.Lock()


def _jobs() -> queue.SimpleQueue[_Job]:
    """The warming thread's queue (the thread started on first use)."""
    global _JOBS
    with _START_LOCK:
        if _JOBS is None:
            _JOBS = queue.SimpleQueue()
            threading.Thread(
                target=_run, args=(_JOBS,), name="promptcache-chunk-warmer", daemon=True
            ).start()
        return _JOBS


def _run(jobs: queue.SimpleQueue[_Job]) -> None:
    if hasattr(os, "SCHED_IDLE"):
        try:  # this thread only (Linux: 0 is the calling thread)
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as error:
            _LOG.debug("chunk warmer keeps its priority: %s", error)
    torch.set_num_threads(1)  # this thread's ops only; never a second OpenMP team
    while True:
        reference, index = jobs.get()
        warmer = reference()
        if warmer is None:
            continue
        try:
            warmer._warm(index)
        except Exception:  # a failed warming costs only the fault time it would have saved
            _LOG.warning("warming pool chunk %d failed", index, exc_info=True)
            warmer.take(index)
        del warmer  # not kept alive while waiting for the next job
