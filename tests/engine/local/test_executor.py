"""The model thread: calls run there, concurrent decode steps are batched, errors reach callers."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence

import pytest
import torch

from promptcache.engine.local.executor import DecodeStep, ModelExecutor

VOCAB = 5


class RecordingModel:
    """A fake ``decode_batch``: logits row = [token, position, ...]; records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.fail_on: int | None = None

    def __call__(self, steps: Sequence[DecodeStep]) -> torch.Tensor:
        self.batches.append(len(steps))
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and any(token == self.fail_on for token, _, _ in steps):
            raise ValueError(f"bad token {self.fail_on}")
        rows = [torch.tensor([token, position, 0, 0, 0.0]) for token, _, position in steps]
        return torch.stack(rows)


def decode_concurrently(
    executor: ModelExecutor, model: RecordingModel, streams: int, steps: int, max_batch: int = 8
) -> dict[int, list[tuple[int, int]]]:
    """``streams`` threads each decoding ``steps`` steps in a session; what each got back."""
    lane = executor.lane(model, max_batch=max_batch)
    seen: dict[int, list[tuple[int, int]]] = {}
    start = threading.Barrier(streams)

    def stream(index: int) -> None:
        got = seen.setdefault(index, [])
        with lane.decoding():
            start.wait(timeout=10)
            for position in range(steps):
                logits = lane.step(100 * index + position, torch.empty(0), position)
                got.append((int(logits[0]), int(logits[1])))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return seen


def test_each_caller_gets_its_own_row() -> None:
    model = RecordingModel()
    seen = decode_concurrently(ModelExecutor(gather_window=1.0), model, streams=3, steps=5)
    for index in range(3):
        assert seen[index] == [(100 * index + p, p) for p in range(5)]
    assert model.threads == {"promptcache-model"}


def test_concurrent_sessions_step_together() -> None:
    model = RecordingModel()
    # A long window: each batch waits for every session's step, so all are full.
    decode_concurrently(ModelExecutor(gather_window=5.0), model, streams=4, steps=6)
    assert model.batches == [4] * 6


def test_max_batch_caps_a_batch() -> None:
    model = RecordingModel()
    decode_concurrently(ModelExecutor(gather_window=5.0), model, streams=4, steps=3, max_batch=2)
    assert max(model.batches) == 2 and sum(model.batches) == 12


def test_a_lone_step_does_not_wait_for_the_window() -> None:
    model = RecordingModel()
    executor = ModelExecutor(gather_window=60.0)
    lane = executor.lane(model)
    logits = lane.step(7, torch.empty(0), 3)  # no session: nothing to wait for
    assert logits[:2].tolist() == [7.0, 3.0]
    with lane.decoding():
        assert lane.step(8, torch.empty(0), 4)[0] == 8  # the only session's step is here
    assert lane.stats.steps == 2 and lane.stats.batches == 2


def test_calls_run_on_the_model_thread_and_raise_there() -> None:
    executor = ModelExecutor(threads=1)
    assert executor.call(lambda: threading.current_thread().name) == "promptcache-model"
    assert executor.call(torch.get_num_threads) == 1
    with pytest.raises(ZeroDivisionError):
        executor.call(lambda: 1 / 0)
    assert executor.call(lambda: 42) == 42, "the thread survives a failed call"


def test_a_failed_batch_fails_every_step_in_it() -> None:
    model = RecordingModel()
    model.fail_on = 1
    executor = ModelExecutor(gather_window=5.0)
    lane = executor.lane(model)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def stream(token: int) -> None:
        with lane.decoding():
            barrier.wait(timeout=10)
            try:
                lane.step(token, torch.empty(0), 0)
            except ValueError as error:
                errors.append(error)

    threads = [threading.Thread(target=stream, args=(t,)) for t in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert model.batches == [2]
    assert len(errors) == 2 and all("bad token 1" in str(e) for e in errors)
    assert executor.lane(RecordingModel()).step(3, torch.empty(0), 0)[0] == 3


def test_lanes_batch_separately() -> None:
    first, second = RecordingModel(), RecordingModel()
    executor = ModelExecutor(gather_window=5.0)
    lanes = [executor.lane(first), executor.lane(second)]
    barrier = threading.Barrier(4)

    def stream(lane_index: int, token: int) -> None:
        lane = lanes[lane_index]
        with lane.decoding():
            barrier.wait(timeout=10)
            for position in range(3):
                assert lane.step(token, torch.empty(0), position)[0] == token

    threads = [threading.Thread(target=stream, args=(i % 2, i)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert first.batches == [2, 2, 2] and second.batches == [2, 2, 2]


def test_a_queued_call_ends_the_wait_for_a_batch() -> None:
    model = RecordingModel()
    executor = ModelExecutor(gather_window=60.0)
    lane = executor.lane(model)
    with lane.decoding(), lane.decoding():  # two sessions, only one will step
        stepped = threading.Thread(target=lane.step, args=(1, torch.empty(0), 0))
        stepped.start()
        for _ in range(1000):  # until the step is queued (a bounded wait)
            if executor._steps:
                break
            time.sleep(0.01)
        # The batch waits for the second session's step; this call ends the wait.
        assert executor.call(lambda: "done") == "done"
        stepped.join(timeout=30)
        assert not stepped.is_alive() and model.batches == [1]


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="gather_window"):
        ModelExecutor(gather_window=-1)
    with pytest.raises(ValueError, match="threads"):
        ModelExecutor(threads=0)
    with pytest.raises(ValueError, match="max_batch"):
        ModelExecutor().lane(RecordingModel(), max_batch=0)


class NextTokenModel:
    """A fake ``decode_batch`` whose argmax is the token after the one stepped (mod 4),
    with the value 10 + position there; records every (token, position) it runs."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []

    def __call__(self, steps: Sequence[DecodeStep]) -> torch.Tensor:
        rows = torch.zeros(len(steps), 4)
        for row, (token, _, position) in enumerate(steps):
            self.steps.append((token, position))
            rows[row, (token + 1) % 4] = 10 + position
        return rows


def argmax(row: torch.Tensor) -> int:
    return int(torch.argmax(row))


def test_a_greedy_sessions_next_step_runs_ahead_and_is_taken() -> None:
    model = NextTokenModel()
    lane = ModelExecutor().lane(model, pick=argmax)
    kv = torch.empty(1, 1, 1, 10, 1)  # room for positions 0..9
    token = 1
    with lane.decoding() as session:
        for position in range(5):
            logits = session.step(token, kv, position, then_greedy=True)
            assert (argmax(logits), float(logits.max())) == ((token + 1) % 4, 10 + position)
            token = argmax(logits)
    # Each step after the first was run ahead and taken. The one after the last (position
    # 5) runs too unless the session closed first; either way it goes with the session.
    assert model.steps[:5] == [(1, 0), (2, 1), (3, 2), (0, 3), (1, 4)]
    assert model.steps[5:] in ([], [(2, 5)])
    assert lane.stats.ahead_taken == 4 and lane.stats.ahead == len(model.steps) - 1


def test_a_step_run_ahead_with_another_token_is_computed_again() -> None:
    model = NextTokenModel()
    lane = ModelExecutor().lane(model, pick=argmax)
    kv = torch.empty(1, 1, 1, 10, 1)
    with lane.decoding() as session:
        session.step(1, kv, 0, then_greedy=True)  # the argmax is 2: (2, 1) runs ahead
        logits = session.step(3, kv, 1)  # the request sampled 3 instead
    assert (argmax(logits), float(logits.max())) == (0, 11)
    assert model.steps == [(1, 0), (2, 1), (3, 1)]
    assert lane.stats.ahead_taken == 0


def test_no_step_runs_ahead_without_room_a_pick_or_the_sessions_word() -> None:
    kv = torch.empty(1, 1, 1, 2, 1)  # positions 0 and 1 only
    for pick, then_greedy, position in ((argmax, True, 1), (None, True, 0), (argmax, False, 0)):
        model = NextTokenModel()
        lane = ModelExecutor().lane(model, pick=pick)
        with lane.decoding() as session:
            session.step(1, kv, position, then_greedy=then_greedy)
        assert model.steps == [(1, position)] and lane.stats.ahead == 0


def test_a_closed_sessions_step_run_ahead_is_not_given_to_another() -> None:
    model = NextTokenModel()
    lane = ModelExecutor().lane(model, pick=argmax)
    kv = torch.empty(1, 1, 1, 10, 1)
    with lane.decoding() as first:
        first.step(1, kv, 0, then_greedy=True)  # (2, 1) runs ahead for `first`
    with lane.decoding() as second:  # e.g. the request's next choice, over the same buffer
        logits = second.step(2, kv, 1)
    assert float(logits.max()) == 11
    # (2, 1) ran ahead for `first` unless it had closed by then, and again for `second`.
    assert model.steps.count((2, 1)) == 1 + lane.stats.ahead
    assert lane.stats.ahead_taken == 0


def hold_the_model_thread(executor: ModelExecutor) -> tuple[threading.Event, threading.Thread]:
    """A call that keeps the model thread busy until the returned event is set."""
    release = threading.Event()
    started = threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(timeout=30)

    holder = threading.Thread(target=executor.call, args=(blocking,))
    holder.start()
    assert started.wait(timeout=10)
    return release, holder


def queue_calls(
    executor: ModelExecutor, calls: list[Callable[[], object]]
) -> tuple[list[threading.Thread], dict[int, object]]:
    """Each call on its own thread, queued one after another in this order; what each
    returned or raised, by index, once its thread is joined."""
    got: dict[int, object] = {}

    def run(index: int) -> None:
        try:
            got[index] = calls[index]()
        except Exception as error:  # the test looks at which call got which error
            got[index] = error

    threads = []
    for index in range(len(calls)):
        thread = threading.Thread(target=run, args=(index,))
        thread.start()
        threads.append(thread)
        for _ in range(1000):  # a bounded wait until it is queued
            if len(executor._calls) > index:
                break
            time.sleep(0.01)
    assert len(executor._calls) == len(calls)
    return threads, got


def test_batched_calls_waiting_together_run_as_one_up_to_the_size_limit() -> None:
    executor = ModelExecutor()
    runs: list[list[str]] = []

    def run_many(items: list[str]) -> list[str]:
        runs.append(list(items))
        return [item.upper() for item in items]

    batcher = executor.batcher(run_many, most=5)
    release, holder = hold_the_model_thread(executor)
    sizes = [("a", 2), ("b", 2), ("c", 2), ("d", 1)]
    threads, got = queue_calls(
        executor, [functools.partial(batcher.call, item, size=size) for item, size in sizes]
    )
    release.set()
    for thread in [*threads, holder]:
        thread.join(timeout=30)
    # a and b fill 4 of 5; c (2) does not fit, d (1) does; c runs next, alone.
    assert runs == [["a", "b", "d"], ["c"]]
    assert got == {0: "A", 1: "B", 2: "C", 3: "D"}


def test_a_failing_batch_is_run_again_one_call_at_a_time() -> None:
    executor = ModelExecutor()
    runs: list[list[int]] = []

    def run_many(items: list[int]) -> list[float]:
        runs.append(list(items))
        return [1 / item for item in items]  # 0 fails

    batcher = executor.batcher(run_many, most=10)
    release, holder = hold_the_model_thread(executor)
    threads, got = queue_calls(executor, [functools.partial(batcher.call, i) for i in (2, 0, 4)])
    release.set()
    for thread in [*threads, holder]:
        thread.join(timeout=30)
    assert runs == [[2, 0, 4], [2], [0], [4]]
    assert got[0] == 0.5 and got[2] == 0.25
    assert isinstance(got[1], ZeroDivisionError)
    assert executor.call(lambda: "alive") == "alive"


def test_no_step_runs_ahead_while_another_session_decodes_without_a_guess() -> None:
    """A sampling session's step would wait for the guesses, and they for it: with any
    session of the lane not in the batch as greedy, nothing runs ahead."""
    model = NextTokenModel()
    lane = ModelExecutor(gather_window=0.01).lane(model, pick=argmax)
    kv = torch.empty(1, 1, 1, 10, 1)
    with lane.decoding() as greedy, lane.decoding():  # the second samples, and is elsewhere
        greedy.step(1, kv, 0, then_greedy=True)
        greedy.step(2, kv, 1, then_greedy=True)
    assert model.steps == [(1, 0), (2, 1)]
    assert lane.stats.ahead == 0
