"""One thread runs every forward of the local model, batching concurrent decode steps.

Every request the local engine serves runs on its own worker thread, but the
model's maths all happens here, on one compute thread:

* **Continuous batching.** Alone, each one-token decode step reads all the
  weights for one row of maths; decoding on a CPU is bound by those reads, so
  N streams stepping in turn cost nearly N times one. A model's
  :class:`DecodeLane` batches its requests' steps: a decoding request holds a
  :meth:`~DecodeLane.decoding` session and hands each step to
  :meth:`~DecodeLane.step`; the compute thread waits -- at most
  ``gather_window`` seconds -- until every session of the lane has a step
  queued (between steps they only sample and detokenise, about a millisecond),
  then runs up to ``max_batch`` of them, oldest first, as one forward. Batches
  form continuously as requests start and finish.
* **Prefill chunks** (:meth:`~ModelExecutor.call`) take turns with decode
  batches, so a long new prompt delays running streams by one chunk at a time.
* **A failing job fails alone.** Whatever a job raises (a foreign
  ``BaseException`` such as pyo3's ``PanicException`` included) is handed to
  its callers and the thread takes the next job; only the interpreter's own
  exits end it, and then the next submission starts a new one. A caller whose
  job was lost with a dead thread gets an error instead of waiting forever.
* **One thread owns the cores.** Loading, the runtime's set-up and every
  forward run here with all intra-op threads; other threads keep their torch
  work (sampling, ...) to one (see ``torch_threads`` for why: a second
  OpenMP team made decode steps ~1.6x slower on 2 cores).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import torch

from promptcache.errors import is_interpreter_exit

DecodeStep = tuple[int, torch.Tensor, int]
"""(token, the request's KV buffer, position): one sequence's next one-token step."""
RunBatch = Callable[[Sequence[DecodeStep]], torch.Tensor]
"""Steps -> logits ``[len(steps), vocab]`` (``LlamaRuntime.decode_batch``)."""

T = TypeVar("T")


@dataclass(frozen=True)
class BatchingStats:
    """Running totals of a lane: decode steps run, the forwards they took, the largest batch."""

    steps: int = 0
    batches: int = 0
    largest_batch: int = 0


@dataclass(eq=False)
class _Job:
    """Work handed to the compute thread, and its outcome."""

    result: Any = None
    error: BaseException | None = None
    done: bool = False


@dataclass(eq=False)
class _StepJob(_Job):
    lane: DecodeLane | None = None
    step: DecodeStep = field(default=(0, torch.empty(0), 0))


@dataclass(eq=False)
class _CallJob(_Job):
    work: Callable[[], Any] = field(default=lambda: None)


class DecodeLane:
    """One model's decode steps, batched on a :class:`ModelExecutor` (see the module docs)."""

    def __init__(self, executor: ModelExecutor, run_batch: RunBatch, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.sessions = 0
        self.stats = BatchingStats()
        self._executor = executor

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Mark the calling request as decoding: batches wait (briefly) for its steps."""
        with self._executor._cv:
            self.sessions += 1
        try:
            yield
        finally:
            with self._executor._cv:
                self.sessions -= 1
                self._executor._cv.notify_all()  # a batch may be waiting for this step

    def step(self, token: int, kv: torch.Tensor, position: int) -> torch.Tensor:
        """The logits after ``token`` at ``position`` (written into ``kv``), batched with others."""
        job = _StepJob(lane=self, step=(token, kv, position))
        self._executor._submit(job, self._executor._steps)
        return cast(torch.Tensor, job.result)


class ModelExecutor:
    """Runs model work on one daemon thread: batched decode steps and single calls."""

    def __init__(
        self,
        *,
        gather_window: float = 0.003,
        threads: int | None = None,
        name: str = "promptcache-model",
    ) -> None:
        """``threads``: intra-op threads of the compute thread (default: one per core)."""
        if gather_window < 0:
            raise ValueError(f"gather_window must not be negative, got {gather_window}.")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}.")
        self._threads = threads or _usable_cores()
        self._window = gather_window
        self._name = name
        self._cv = threading.Condition()
        self._steps: deque[_StepJob] = deque()
        self._calls: deque[_CallJob] = deque()
        self._call_turn = False
        self._thread: threading.Thread | None = None

    def lane(self, run_batch: RunBatch, *, max_batch: int = 8) -> DecodeLane:
        """A lane whose steps run up to ``max_batch`` at a time through ``run_batch``."""
        return DecodeLane(self, run_batch, max_batch)

    def call(self, work: Callable[[], T]) -> T:
        """``work()`` run on the compute thread (loading, a prefill chunk, a KV copy);
        its result, or its exception raised here."""
        job = _CallJob(work=work)
        self._submit(job, self._calls)
        return cast(T, job.result)

    def _submit(self, job: _StepJob | _CallJob, queue: deque[Any]) -> None:
        with self._cv:
            self._ensure_thread()
            queue.append(job)
            self._cv.notify_all()
            while not job.done:
                # Woken by _publish; the timeout only notices a thread that died
                # with this job in hand, which would otherwise never answer.
                self._cv.wait(timeout=1.0)
                if not job.done and not self._thread_alive():
                    if job in queue:
                        self._ensure_thread()
                    else:
                        raise RuntimeError("the model thread died while running this job")
        if job.error is not None:
            raise job.error

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _ensure_thread(self) -> None:
        """Start the compute thread if there is none (cv held)."""
        if not self._thread_alive():
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        torch.set_num_threads(self._threads)
        while True:
            with self._cv:
                while not (self._steps or self._calls):
                    self._cv.wait()
                # Calls (prefill chunks) and decode batches take turns when both wait.
                take_call = bool(self._calls) and (self._call_turn or not self._steps)
                self._call_turn = not take_call
                if take_call:
                    call = self._calls.popleft()
                else:
                    lane, batch = self._gather()
            if take_call:
                self._run_call(call)
            else:
                self._run_batch(lane, batch)

    def _gather(self) -> tuple[DecodeLane, list[_StepJob]]:
        """The oldest step's lane and up to its ``max_batch`` queued steps, once each of its
        sessions has one queued (cv held). A queued call ends the wait: its caller may be
        a session that cannot step until the call is done."""
        lane = self._steps[0].lane
        assert lane is not None
        deadline = time.monotonic() + self._window
        while not self._calls:
            queued = sum(1 for job in self._steps if job.lane is lane)
            remaining = deadline - time.monotonic()
            if queued >= min(lane.sessions, lane.max_batch) or remaining <= 0:
                break
            self._cv.wait(remaining)
        batch = [job for job in self._steps if job.lane is lane][: lane.max_batch]
        for job in batch:
            self._steps.remove(job)
        return lane, batch

    def _run_call(self, job: _CallJob) -> None:
        error: BaseException | None = None
        try:
            job.result = job.work()
        except BaseException as caught:
            error = caught
        self._publish([job], error)

    def _run_batch(self, lane: DecodeLane, jobs: list[_StepJob]) -> None:
        error: BaseException | None = None
        try:
            logits = lane.run_batch([job.step for job in jobs])
            for row, job in enumerate(jobs):
                job.result = logits[row]
        except BaseException as caught:
            error = caught
        with self._cv:
            old = lane.stats
            lane.stats = BatchingStats(
                old.steps + len(jobs), old.batches + 1, max(old.largest_batch, len(jobs))
            )
        self._publish(jobs, error)

    def _publish(self, jobs: Sequence[_Job], error: BaseException | None) -> None:
        """Wake every caller of ``jobs``: each gets its result or ``error``."""
        with self._cv:
            for job in jobs:
                job.error, job.done = error, True
            self._cv.notify_all()
        if error is not None and is_interpreter_exit(error):
            raise error  # SystemExit and the like end this thread; the next submit restarts it


def _usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
