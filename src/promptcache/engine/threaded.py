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
  inside the sync engine (prefix cache);
* **a fault stays with its request.** Whatever a generation raises --
  ``Exception`` or a foreign ``BaseException`` such as pyo3's
  ``PanicException`` from a Rust library -- ends that request alone: a
  :class:`~promptcache.errors.PromptCacheError` is passed on as it is, anything
  else becomes an :class:`~promptcache.errors.InternalError` (500) whose
  request id is logged with the traceback, and the worker takes the next job.
  A worker that dies anyway (the interpreter's own exits) is replaced on the
  next admission, and :meth:`ThreadedEngine.health` says so meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promptcache.engine.base import (
    Engine,
    ModelInfo,
    PinnedPrefix,
    PrefixCacheSnapshot,
    PrefixPinningEngine,
    SyncEngine,
    no_named_prefixes,
)
from promptcache.engine.engine_health import DEFAULT_STALL_SECONDS, EngineHealth
from promptcache.errors import (
    InternalError,
    OverloadedError,
    PromptCacheError,
    is_interpreter_exit,
)
from promptcache.request import ChatRequest
from promptcache.result import Result, StreamEvent

if TYPE_CHECKING:  # the prefix package needs torch; a proxy server runs without it
    from promptcache.prefix.named import NamedPrefixes

logger = logging.getLogger(__name__)


class _Done:
    """End-of-stream marker posted by a worker after the last event."""


_DONE = _Done()


@dataclass(eq=False)
class _Job:
    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[StreamEvent | PromptCacheError | _Done]
    on_post: Callable[[], None]
    cancel: threading.Event = field(default_factory=threading.Event)

    def post(self, item: StreamEvent | PromptCacheError | _Done) -> None:
        self.on_post()
        # The loop may already be closed when a cancelled job finishes late.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)


class ThreadedEngine(Engine):
    """An async :class:`Engine` over a :class:`SyncEngine` run on worker threads.

    ``max_queue`` bounds the requests *waiting* for a worker (running ones are
    not counted); ``0`` admits a request only when a worker is idle.
    ``workers`` > 1 requires a sync engine that is safe to call concurrently.
    """

    def __init__(
        self,
        sync_engine: SyncEngine,
        *,
        max_queue: int,
        workers: int = 1,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
    ) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if stall_seconds <= 0:
            raise ValueError(f"stall_seconds must be > 0, got {stall_seconds}")
        self.sync_engine = sync_engine
        self.max_queue = max_queue
        self.workers = workers
        self.stall_seconds = stall_seconds
        self.workers_replaced = 0
        self._pending: deque[_Job] = deque()
        self._running = 0
        self._closed = False
        self._last_progress = time.monotonic()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._threads = [self._start_worker(i) for i in range(workers)]
        self._pinning = 0
        """Named prefixes being prefilled (at most ``workers`` at once)."""

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

    def health(self) -> EngineHealth:
        """Whether the workers are alive, making progress, and the queue has room."""
        with self._lock:
            since = time.monotonic() - self._last_progress
            return EngineHealth(
                workers=self.workers,
                workers_alive=sum(thread.is_alive() for thread in self._threads),
                running=self._running,
                queue_depth=len(self._pending),
                max_queue=self.max_queue,
                seconds_since_progress=round(since, 3),
                stalled=self._running > 0 and since > self.stall_seconds,
                closed=self._closed,
            )

    def models(self) -> list[ModelInfo]:
        return self.sync_engine.models()

    def prefix_stats(self) -> PrefixCacheSnapshot | None:
        return self.sync_engine.prefix_stats()

    def clear_prefix_cache(self) -> None:
        self.sync_engine.clear_prefix_cache()

    @property
    def named_prefixes(self) -> NamedPrefixes | None:
        engine = self.sync_engine
        return engine.named_prefixes if isinstance(engine, PrefixPinningEngine) else None

    async def pin_prefix(
        self, request: ChatRequest, *, ttl_seconds: float, name: str | None, model: str
    ) -> PinnedPrefix:
        """The sync engine's ``pin_prefix`` on a thread (its prefill runs on the model's
        compute thread between other requests' steps). A caller that goes away stops the
        prefill, and a prefix pinned meanwhile is unpinned: nobody knows its id."""
        engine = self.sync_engine
        registry = self.named_prefixes
        if not isinstance(engine, PrefixPinningEngine) or registry is None:
            raise no_named_prefixes(engine)
        with self._lock:
            if self._closed:
                raise OverloadedError("The server is shutting down.")
            if self._pinning >= self.workers:
                raise OverloadedError(
                    f"{self._pinning} prefixes are being pinned already (at most "
                    f"{self.workers} at once, --engine-workers); retry later."
                )
            self._pinning += 1
        cancel = threading.Event()
        try:
            work = asyncio.get_running_loop().run_in_executor(
                None,
                functools.partial(
                    engine.pin_prefix,
                    request,
                    ttl_seconds=ttl_seconds,
                    name=name,
                    model=model,
                    cancel=cancel,
                ),
            )
        except BaseException:
            self._pin_done(None)
            raise
        work.add_done_callback(self._pin_done)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancel.set()
            work.add_done_callback(functools.partial(_unpin_orphan, registry, request.tenant))
            raise
        except PromptCacheError:
            raise
        except Exception as exc:
            raise _contain(request, exc) from None

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        job = _Job(
            request=request,
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
            on_post=self._note_progress,
        )
        self._admit(job)
        finished = False
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, _Done):
                    finished = True
                    return
                if isinstance(item, PromptCacheError):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                self._abandon(job)

    async def aclose(self, *, timeout: float = 30.0) -> None:
        """Refuse new work, drop the queue, and wait up to ``timeout`` seconds in all for
        the running requests' workers (daemon threads: a stuck one never blocks exit)."""
        with self._lock:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._wakeup.notify_all()
        for job in dropped:
            job.cancel.set()
            job.post(OverloadedError("The server is shutting down."))
        await asyncio.to_thread(self._join, timeout)

    # -- internals ---------------------------------------------------------

    def _pin_done(self, _: asyncio.Future[PinnedPrefix] | None) -> None:
        with self._lock:
            self._pinning -= 1

    def _start_worker(self, index: int) -> threading.Thread:
        thread = threading.Thread(
            target=self._work, name=f"promptcache-engine-{index}", daemon=True
        )
        thread.start()
        return thread

    def _replace_dead_workers(self) -> None:
        """The supervisor: a worker that died (lock held) is replaced by a fresh one."""
        for index, thread in enumerate(self._threads):
            if not thread.is_alive():
                logger.error("engine worker %s had died; starting a replacement", thread.name)
                self._threads[index] = self._start_worker(index)
                self.workers_replaced += 1

    def _note_progress(self) -> None:
        self._last_progress = time.monotonic()

    def _admit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise OverloadedError("The server is shutting down.")
            self._replace_dead_workers()
            if self._running == 0:
                self._last_progress = time.monotonic()  # idle is not stalled
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

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wakeup.wait()
                if self._closed and not self._pending:
                    return
                job = self._pending.popleft()
                self._running += 1
                self._last_progress = time.monotonic()
            final: list[StreamEvent | PromptCacheError | _Done] = []
            try:
                final = self._run(job)
            except BaseException as exc:
                # Only the interpreter's own exits get here (_run contains the
                # rest): the job is still answered before this thread ends.
                final = [_contain(job.request, exc)]
                raise
            finally:
                # The worker is free before the consumer hears the end: a client
                # that sends its next request as soon as this one ends must find
                # an idle worker, not a spurious "queue full".
                with self._lock:
                    self._running -= 1
                for item in final:
                    job.post(item)

    def _run(self, job: _Job) -> list[StreamEvent | PromptCacheError | _Done]:
        """Post the job's events as they come; return the terminal ones to post last."""
        if job.cancel.is_set():
            return []
        try:
            events = self.sync_engine.generate(job.request, cancel=job.cancel)
        except BaseException as exc:  # an engine that validates eagerly must not kill the worker
            if is_interpreter_exit(exc):
                raise
            return [_contain(job.request, exc)]
        try:
            for event in events:
                if job.cancel.is_set():
                    break
                if isinstance(event, Result):
                    return [event, _DONE]
                job.post(event)
        except BaseException as exc:  # handed to the awaiting coroutine, which re-raises it
            if is_interpreter_exit(exc):
                raise
            return [_contain(job.request, exc)]
        finally:
            # Closing the generator runs its cleanup now (KV references released)
            # rather than whenever it is garbage collected.
            close = getattr(events, "close", None)
            if close is not None:
                try:
                    close()
                except BaseException as exc:  # a failing cleanup is logged, not fatal
                    if is_interpreter_exit(exc):
                        raise
                    logger.exception("closing a generation failed")
        return [_DONE]


def _unpin_orphan(registry: NamedPrefixes, tenant: str, work: asyncio.Future[PinnedPrefix]) -> None:
    if not work.cancelled() and work.exception() is None:
        registry.remove(tenant, work.result().id)


def _contain(request: ChatRequest, exc: BaseException) -> PromptCacheError:
    """The error that ends one request: its own, or a logged 500 with a request id."""
    if isinstance(exc, PromptCacheError):
        return exc
    request_id = request.transport.request_id or f"req_{uuid.uuid4().hex[:24]}"
    logger.error(
        "request %s failed in the engine (%s)",
        request_id,
        type(exc).__name__,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return InternalError(request_id)
