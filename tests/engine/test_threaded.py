"""ThreadedEngine: a SyncEngine on worker threads, bounded queue, cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from promptcache.engine.threaded import ThreadedEngine
from promptcache.errors import OverloadedError, RequestError
from promptcache.request import ChatRequest, Message, TextBlock
from promptcache.result import Result, TextDelta
from tests.server.fakes import FakeSyncEngine


def request(text: str) -> ChatRequest:
    return ChatRequest(
        model="fake-model", messages=(Message(role="user", content=(TextBlock(text=text),)),)
    )


async def test_streams_deltas_then_result_without_blocking_the_loop() -> None:
    fake = FakeSyncEngine(token_delay=0.01)
    engine = ThreadedEngine(fake, max_queue=2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    try:
        events = [event async for event in engine.stream(request("one two three"))]
    finally:
        task.cancel()
        await engine.aclose()
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == "echo: one two three"
    assert isinstance(events[-1], Result)
    assert ticks > 5  # the loop kept running while the worker generated


async def test_complete_returns_the_result_and_errors_propagate() -> None:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=0)
    try:
        result = await engine.complete(request("hi"))
        with pytest.raises(RequestError, match="refuses"):
            await engine.complete(request("fail"))
    finally:
        await engine.aclose()
    assert result.choices[0].text == "echo: hi"


async def test_a_finished_request_frees_its_worker_before_the_caller_hears_the_end() -> None:
    # With max_queue=0 a request is admitted only when a worker is idle; a
    # caller that sends its next request right after the previous one ended
    # must never be refused as overloaded.
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=0)
    try:
        for turn in range(200):
            result = await engine.complete(request(f"turn {turn}"))
            assert result.choices[0].text == f"echo: turn {turn}"
            assert engine.running == 0
    finally:
        await engine.aclose()


async def test_queue_bound_refuses_with_overloaded() -> None:
    fake = FakeSyncEngine()
    fake.gate = threading.Event()
    engine = ThreadedEngine(fake, max_queue=1)
    try:
        running = asyncio.create_task(engine.complete(request("a b")))
        await asyncio.to_thread(fake.started.wait, 5)
        queued = asyncio.create_task(engine.complete(request("c d")))
        while engine.queue_depth != 1:
            await asyncio.sleep(0.005)
        with pytest.raises(OverloadedError):
            await engine.complete(request("e f"))
        fake.gate.set()
        results = await asyncio.gather(running, queued)
    finally:
        fake.gate.set()
        await engine.aclose()
    assert [r.choices[0].text for r in results] == ["echo: a b", "echo: c d"]
    assert engine.queue_depth == 0


async def test_closing_the_stream_cancels_a_running_generation() -> None:
    fake = FakeSyncEngine()
    fake.gate = threading.Event()
    engine = ThreadedEngine(fake, max_queue=1)
    try:
        stream = engine.stream(request("x y z"))
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(1000):
            if fake.cancelled and engine.running == 0:
                break
            await asyncio.sleep(0.005)
    finally:
        fake.gate.set()
        await engine.aclose()
    assert fake.cancelled == 1
    assert fake.completed == 0


async def test_a_queued_request_dropped_before_it_starts_never_runs() -> None:
    fake = FakeSyncEngine()
    fake.gate = threading.Event()
    engine = ThreadedEngine(fake, max_queue=1)
    try:
        running = asyncio.create_task(engine.complete(request("first one")))
        await asyncio.to_thread(fake.started.wait, 5)
        waiting = asyncio.create_task(engine.complete(request("second one")))
        while engine.queue_depth != 1:
            await asyncio.sleep(0.005)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert engine.queue_depth == 0
        fake.gate.set()
        await running
    finally:
        fake.gate.set()
        await engine.aclose()
    assert fake.calls == 1


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        ThreadedEngine(FakeSyncEngine(), max_queue=-1)
    with pytest.raises(ValueError, match="workers"):
        ThreadedEngine(FakeSyncEngine(), max_queue=1, workers=0)


class _EagerlyValidatingEngine(FakeSyncEngine):
    """Raises from ``generate`` itself, before returning an iterator."""

    def generate(self, request: ChatRequest, *, cancel: threading.Event | None = None):  # type: ignore[no-untyped-def]
        raise RequestError("eager validation refuses this")


async def test_an_engine_raising_at_call_time_fails_the_request_not_the_worker() -> None:
    engine = ThreadedEngine(_EagerlyValidatingEngine(), max_queue=2, workers=1)
    try:
        for _ in range(2):  # the second call proves the single worker is still alive
            with pytest.raises(RequestError, match="eager validation"):
                await asyncio.wait_for(engine.complete(request("hi")), timeout=30)
    finally:
        await engine.aclose()
