"""Running a CPU-bound :class:`SyncEngine` behind the async :class:`Engine` interface.

:class:`ThreadedEngine` owns a bounded admission queue and a small pool of
worker threads. The event loop only ever enqueues a job and awaits its events,
so it never blocks on model compute, and:

* a full queue is refused at once with :class:`~promptcache.errors.OverloadedError`
  (HTTP 429) instead of letting latency grow without bound;
* closing a stream early (a client that disconnects) sets the job's cancel
  event: a queued job is dropped before it starts, a running one stops between
  tokens and the sync engine releases its KV references;
* it stores nothing: caching happens in front of it (response cache) and
  inside the sync engine (prefix cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from promptcache.engine.base import Engine, ModelInfo, PrefixCacheSnapshot, SyncEngine
from promptcache.errors import OverloadedError
from promptcache.request import ChatRequest, Result, StreamEvent


class _Done:
    """End-of-stream marker posted by a worker after the last event."""


_DONE = _Done()


@dataclass(eq=False)
class _Job:
    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[StreamEvent | Exception | _Done]
    cancel: threading.Event = field(default_factory=threading.Event)

    def post(self, item: StreamEvent | Exception | _Done) -> None:
        # The loop may already be closed when a cancelled job finishes late.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class ThreadedEngine(Engine):
    """An async :class:`Engine` over a :class:`SyncEngine` run on worker threads.

    ``max_queue`` bounds the requests *waiting* for a worker (running ones are
    not counted); ``0`` admits a request only when a worker is idle.
    ``workers`` > 1 requires a sync engine that is safe to call concurrently.
    """

    def __init__(self, sync_engine: SyncEngine, *, max_queue: int, workers: int = 1) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.sync_engine = sync_engine
        self.max_queue = max_queue
        self.workers = workers
        self._pending: deque[_Job] = deque()
        self._running = 0
        self._closed = False
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._threads = [
            threading.Thread(target=self._work, name=f"promptcache-engine-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- figures for /metrics ------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Requests admitted but not yet started."""
        with self._lock:
            return len(self._pending)

    @property
    def running(self) -> int:
        """Requests a worker is generating right now."""
        with self._lock:
            return self._running

    # -- Engine ------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return self.sync_engine.models()

    def prefix_stats(self) -> PrefixCacheSnapshot | None:
        return self.sync_engine.prefix_stats()

    def clear_prefix_cache(self) -> None:
        self.sync_engine.clear_prefix_cache()

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        job = _Job(request=request, loop=asyncio.get_running_loop(), events=asyncio.Queue())
        self._admit(job)
        finished = False
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, _Done):
                    finished = True
                    return
                if isinstance(item, Exception):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                self._abandon(job)

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._wakeup.notify_all()
        for job in dropped:
            job.cancel.set()
            job.post(OverloadedError("The server is shutting down."))
        await asyncio.to_thread(self._join)

    # -- internals ---------------------------------------------------------

    def _admit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise OverloadedError("The server is shutting down.")
            idle_workers = self.workers - self._running - len(self._pending)
            if idle_workers <= 0 and len(self._pending) >= self.max_queue:
                raise OverloadedError(
                    f"The engine queue is full ({self.max_queue} waiting, "
                    f"{self._running} running); retry later."
                )
            self._pending.append(job)
            self._wakeup.notify()

    def _abandon(self, job: _Job) -> None:
        """The consumer went away: stop the job, or drop it if it has not started."""
        job.cancel.set()
        with self._lock, contextlib.suppress(ValueError):
            self._pending.remove(job)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wakeup.wait()
                if self._closed and not self._pending:
                    return
                job = self._pending.popleft()
                self._running += 1
            final: list[StreamEvent | Exception | _Done] = []
            try:
                final = self._run(job)
            finally:
                # The worker is free before the consumer hears the end: a client
                # that sends its next request as soon as this one ends must find
                # an idle worker, not a spurious "queue full".
                with self._lock:
                    self._running -= 1
                for item in final:
                    job.post(item)

    def _run(self, job: _Job) -> list[StreamEvent | Exception | _Done]:
        """Post the job's events as they come; return the terminal ones to post last."""
        if job.cancel.is_set():
            return []
        try:
            events = self.sync_engine.generate(job.request, cancel=job.cancel)
        except Exception as exc:  # an engine that validates eagerly must not kill the worker
            return [exc]
        try:
            for event in events:
                if job.cancel.is_set():
                    break
                if isinstance(event, Result):
                    return [event, _DONE]
                job.post(event)
        except Exception as exc:  # handed to the awaiting coroutine, which re-raises it
            return [exc]
        finally:
            # Closing the generator runs its cleanup now (KV references released)
            # rather than whenever it is garbage collected.
            close = getattr(events, "close", None)
            if close is not None:
                close()
        return [_DONE]
