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
* **Greedy steps run ahead.** A session whose next token is the argmax of its
  logits (greedy sampling, nothing that changes the logits first) says so with
  each step; right after that step, unless a call waits, the compute thread runs
  the next one with that token, and the request's own next step -- once it has
  sampled, detokenised and sent the token -- finds it done. The request's overhead
  between steps (a millisecond or two over HTTP, on the same two cores) then
  overlaps a step instead of adding to each. A guess the request does not take
  (it stopped, or sampled another token) is dropped; its KV write lies past the
  request's last position, which the next writer of that slot writes again.
  Rows of a batch are independent, so a step run ahead is the step run on time.
* **Prefill chunks** take turns with decode batches, so a long new prompt delays
  running streams by one chunk at a time; and the chunks of several requests
  waiting at once run as one call (a :class:`CallBatcher`), up to a chunk's worth of
  tokens: 8 clients arriving together had their 8 prompts prefilled one after another,
  each with a decode batch in between, before the last could decode.
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

CALL_SLICE_SECONDS = 0.005
"""How long a turn of calls may go on before waiting decode steps get a batch: about a
step, so streams wait at most one more step for the short calls of new requests."""


@dataclass(frozen=True)
class BatchingStats:
    """Running totals of a lane: decode steps run, the forwards they took, the largest
    batch, and of the steps, how many ran ahead of their request and how many of those
    the request took."""

    steps: int = 0
    batches: int = 0
    largest_batch: int = 0
    ahead: int = 0
    ahead_taken: int = 0

    def plus(self, steps: int, *, ahead: int = 0, taken: int = 0) -> BatchingStats:
        """These totals after one more forward of ``steps`` rows (none: only ``taken``)."""
        return BatchingStats(
            self.steps + steps,
            self.batches + (1 if steps else 0),
            max(self.largest_batch, steps),
            self.ahead + ahead,
            self.ahead_taken + taken,
        )


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
    session: DecodeSession | None = None
    then_greedy: bool = False
    """The request's next token is the argmax of this step's logits: run it ahead."""


@dataclass(eq=False)
class _Ahead:
    """A session's next step, run before the request asked for it."""

    step: DecodeStep
    logits: torch.Tensor


class DecodeSession:
    """One decoding request's steps on a lane (:meth:`DecodeLane.decoding`)."""

    def __init__(self, lane: DecodeLane) -> None:
        self._lane = lane
        self.open = True
        self.ahead: _Ahead | None = None
        """The step run ahead for this session (compute thread; cleared under the cv)."""

    def step(
        self, token: int, kv: torch.Tensor, position: int, *, then_greedy: bool = False
    ) -> torch.Tensor:
        """:meth:`DecodeLane.step`; ``then_greedy``: the next token will be the argmax of
        these logits and will be stepped, so the lane may run that step ahead."""
        return self._lane._step(token, kv, position, self, then_greedy)


@dataclass(eq=False)
class _CallJob(_Job):
    work: Callable[[], Any] = field(default=lambda: None)


@dataclass(eq=False)
class _BatchedJob(_Job):
    batcher: CallBatcher | None = None
    item: Any = None
    size: int = 1


class CallBatcher:
    """Calls whose items run together on the compute thread: ``run_many(items)`` gives
    one result per item, in order; the items queued when one is taken join it, up to
    ``most`` in total size (the first alone may be larger). A batch that raises is run
    again one item at a time, so an error stays with the item that caused it."""

    def __init__(
        self, executor: ModelExecutor, run_many: Callable[[list[Any]], list[Any]], most: int
    ) -> None:
        if most < 1:
            raise ValueError(f"most must be at least 1, got {most}.")
        self.run_many = run_many
        self.most = most
        self._executor = executor

    def call(self, item: Any, *, size: int = 1) -> Any:
        """``item``'s result from ``run_many``, run with whatever else is waiting."""
        job = _BatchedJob(batcher=self, item=item, size=size)
        self._executor._submit(job, self._executor._calls)
        return job.result


class DecodeLane:
    """One model's decode steps, batched on a :class:`ModelExecutor` (see the module docs)."""

    def __init__(
        self,
        executor: ModelExecutor,
        run_batch: RunBatch,
        max_batch: int,
        pick: Callable[[torch.Tensor], int] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.pick = pick
        """The argmax a greedy request samples with (None: no steps run ahead)."""
        self.sessions = 0
        self.stats = BatchingStats()
        self._executor = executor

    @contextlib.contextmanager
    def decoding(self) -> Iterator[DecodeSession]:
        """Mark the calling request as decoding: batches wait (briefly) for its steps."""
        session = DecodeSession(self)
        with self._executor._cv:
            self.sessions += 1
        try:
            yield session
        finally:
            with self._executor._cv:
                self.sessions -= 1
                session.open, session.ahead = False, None
                self._executor._cv.notify_all()  # a batch may be waiting for this step

    def step(self, token: int, kv: torch.Tensor, position: int) -> torch.Tensor:
        """The logits after ``token`` at ``position`` (written into ``kv``), batched with others."""
        return self._step(token, kv, position, None, False)

    def _step(
        self,
        token: int,
        kv: torch.Tensor,
        position: int,
        session: DecodeSession | None,
        then_greedy: bool,
    ) -> torch.Tensor:
        job = _StepJob(
            lane=self, step=(token, kv, position), session=session, then_greedy=then_greedy
        )
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
        self._calls: deque[_CallJob | _BatchedJob] = deque()
        self._call_turn = False
        self._thread: threading.Thread | None = None

    def lane(
        self,
        run_batch: RunBatch,
        *,
        max_batch: int = 8,
        pick: Callable[[torch.Tensor], int] | None = None,
    ) -> DecodeLane:
        """A lane whose steps run up to ``max_batch`` at a time through ``run_batch``;
        ``pick``: greedy sampling's argmax of one row of logits, for steps run ahead."""
        return DecodeLane(self, run_batch, max_batch, pick)

    def batcher(self, run_many: Callable[[list[Any]], list[Any]], *, most: int) -> CallBatcher:
        """Calls batched through ``run_many`` (:class:`CallBatcher`), up to ``most`` in size."""
        return CallBatcher(self, run_many, most)

    def call(self, work: Callable[[], T]) -> T:
        """``work()`` run on the compute thread (loading, a prefill chunk, a KV copy);
        its result, or its exception raised here."""
        job = _CallJob(work=work)
        self._submit(job, self._calls)
        return cast(T, job.result)

    def _submit(self, job: _StepJob | _CallJob | _BatchedJob, queue: deque[Any]) -> None:
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
        calls_began = 0.0
        in_turn = False  # the last job run was a call
        while True:
            with self._cv:
                while not (self._steps or self._calls):
                    self._cv.wait()
                # Calls (prefill chunks, KV copies) and decode batches take turns when both
                # wait; a turn of calls goes on while they have taken less than
                # CALL_SLICE_SECONDS, so a new request's short calls (its commit, a gather)
                # do not each cost running streams a decode batch.
                take_call = bool(self._calls) and (self._call_turn or not self._steps)
                if take_call and not in_turn:
                    calls_began = time.monotonic()
                if take_call:
                    call = self._calls.popleft()
                    calls = self._joining(call) if isinstance(call, _BatchedJob) else []
                else:
                    lane, batch = self._gather()
            if not take_call:
                self._run_batch(lane, batch)
                in_turn, self._call_turn = False, True  # the calls' turn next
                continue
            if isinstance(call, _BatchedJob):
                self._run_batched([call, *calls])
            else:
                self._run_call(call)
            in_turn = True
            self._call_turn = time.monotonic() - calls_began < CALL_SLICE_SECONDS

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

    def _joining(self, first: _BatchedJob) -> list[_BatchedJob]:
        """The queued calls of ``first``'s batcher that join it, in order (cv held)."""
        assert first.batcher is not None
        room = first.batcher.most - first.size
        joining: list[_BatchedJob] = []
        for job in self._calls:
            if isinstance(job, _BatchedJob) and job.batcher is first.batcher and job.size <= room:
                joining.append(job)
                room -= job.size
        for job in joining:
            self._calls.remove(job)
        return joining

    def _run_batched(self, jobs: list[_BatchedJob]) -> None:
        batcher = jobs[0].batcher
        assert batcher is not None
        try:
            results = batcher.run_many([job.item for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"{len(results)} results for {len(jobs)} batched calls")
        except BaseException as caught:
            if len(jobs) == 1 or is_interpreter_exit(caught):
                self._publish(jobs, caught)
                return
            for job in jobs:  # each alone: the failure stays with its own call
                self._run_batched([job])
            return
        for job, result in zip(jobs, results, strict=True):
            job.result = result
        self._publish(jobs, None)

    def _run_call(self, job: _CallJob) -> None:
        error: BaseException | None = None
        try:
            job.result = job.work()
        except BaseException as caught:
            error = caught
        self._publish([job], error)

    def _run_batch(self, lane: DecodeLane, jobs: list[_StepJob]) -> None:
        error: BaseException | None = None
        computed: list[_StepJob] = []
        try:
            for job in jobs:
                if not self._take_ahead(job):
                    computed.append(job)
            if computed:
                logits = lane.run_batch([job.step for job in computed])
                for row, job in enumerate(computed):
                    job.result = logits[row]
        except BaseException as caught:
            error = caught
        with self._cv:
            lane.stats = lane.stats.plus(len(computed), taken=len(jobs) - len(computed))
        self._publish(jobs, error)
        if error is None:
            self._run_ahead(lane, jobs)

    @staticmethod
    def _take_ahead(job: _StepJob) -> bool:
        """Answer ``job`` with its session's step run ahead, if that is this step."""
        session = job.session
        ahead = session.ahead if session is not None else None
        if session is None or ahead is None:
            return False
        session.ahead = None
        token, kv, position = job.step
        if ahead.step[0] != token or ahead.step[1] is not kv or ahead.step[2] != position:
            return False  # another token (or a grown buffer): computed now, its KV rewritten
        job.result = ahead.logits
        return True

    def _run_ahead(self, lane: DecodeLane, jobs: list[_StepJob]) -> None:
        """Run the next steps of the sessions of ``jobs`` now, with the argmax of the
        logits just published, when every decoding session of the lane is among them and
        greedy, and no call waits (its turn comes first). With a sampling session
        decoding too, its step would wait for the guesses and the guesses for it: two
        forwards a round where one batch does."""
        pick = lane.pick
        with self._cv:
            if pick is None or self._calls:
                return
            sessions = [
                (job.session, job)
                for job in jobs
                if job.then_greedy and job.session is not None and job.session.open
            ]
            if len(sessions) < lane.sessions:
                return
        steps: list[tuple[DecodeSession, DecodeStep]] = []
        for session, job in sessions:
            _, kv, position = job.step
            if position + 1 < kv.shape[3]:  # else the request grows its buffer first
                steps.append((session, (pick(job.result), kv, position + 1)))
        if not steps:
            return
        try:
            logits = lane.run_batch([step for _, step in steps])
        except BaseException as caught:
            if is_interpreter_exit(caught):
                raise
            return  # a guess that failed costs nothing: the request's own step reports it
        with self._cv:
            lane.stats = lane.stats.plus(len(steps), ahead=len(steps))
            for row, (session, step) in enumerate(steps):
                if session.open:
                    session.ahead = _Ahead(step, logits[row])

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
