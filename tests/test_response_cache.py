from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from promptcache.response_cache import ResponseCache
from promptcache.result import Choice, Result, Usage
from promptcache.store import MemoryStore, open_store


def _result(text: str = "hello") -> Result:
    return Result(
        id="r1",
        model="m",
        created=1,
        choices=(Choice(text=text),),
        usage=Usage(input_tokens=3, output_tokens=2),
    )


@pytest.fixture
def cache() -> ResponseCache:
    return ResponseCache(MemoryStore())


def test_put_get_round_trips_the_result_with_its_age(cache: ResponseCache) -> None:
    cache.put("k", _result())
    hit = cache.get("k")
    assert hit is not None
    assert hit.result == _result()
    assert 0 <= hit.age < 60


def test_max_age_rejects_older_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("promptcache.store.memory.time.time", lambda: now[0])
    monkeypatch.setattr("promptcache.response_cache.cache.time.time", lambda: now[0])
    cache = ResponseCache(MemoryStore())
    cache.put("k", _result())
    now[0] += 30
    assert cache.get("k", max_age=60) is not None
    assert cache.get("k", max_age=10) is None
    hit = cache.get("k")
    assert hit is not None and hit.age == 30


def test_unreadable_entry_is_a_miss_and_is_dropped(cache: ResponseCache) -> None:
    cache.store.put("k", b"{not json")
    assert cache.get("k") is None
    assert cache.store.get("k") is None


def test_failing_store_never_fails_the_caller(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/c.db")
    cache = ResponseCache(store)
    store.close()  # every call now raises StoreError inside the store
    assert cache.get("k") is None
    cache.put("k", _result())


async def test_50_concurrent_identical_calls_compute_once(cache: ResponseCache) -> None:
    calls = 0

    async def compute() -> Result:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return _result(f"computed {calls}")

    outcomes = await asyncio.gather(*(cache.get_or_compute("k", compute) for _ in range(50)))
    assert calls == 1
    assert {o[0] for o in outcomes} == {_result("computed 1")}
    statuses: list[str] = [o[1] for o in outcomes]
    assert statuses.count("MISS") == 1 and statuses.count("HIT") == 49
    assert cache.get("k") is not None


async def test_failing_leader_hands_over_and_no_error_is_stored(cache: ResponseCache) -> None:
    calls = 0

    async def compute() -> Result:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        if calls == 1:
            raise RuntimeError("upstream failed")
        return _result("second try")

    outcomes = await asyncio.gather(
        *(cache.get_or_compute("k", compute) for _ in range(10)), return_exceptions=True
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1 and "upstream failed" in str(errors[0])
    assert calls == 2
    assert all(o[0] == _result("second try") for o in outcomes if not isinstance(o, BaseException))
    hit = cache.get("k")
    assert hit is not None and hit.result == _result("second try")


async def test_cancelled_leader_hands_over(cache: ResponseCache) -> None:
    started = asyncio.Event()

    async def slow() -> Result:
        started.set()
        await asyncio.sleep(60)
        return _result("never")

    async def fast() -> Result:
        return _result("waiter computed")

    leader = asyncio.create_task(cache.get_or_compute("k", slow))
    await started.wait()
    waiter = asyncio.create_task(cache.get_or_compute("k", fast))
    await asyncio.sleep(0.01)
    leader.cancel()
    result, status, _ = await asyncio.wait_for(waiter, 10)
    assert (result, status) == (_result("waiter computed"), "MISS")


async def test_flight_serves_waiters_at_publish_time(cache: ResponseCache) -> None:
    published = asyncio.Event()
    release = asyncio.Event()

    async def leader() -> None:
        async with cache.flight("k") as flight:
            assert flight.is_leader and flight.result is None
            flight.publish(_result("live"))
            published.set()
            await release.wait()  # e.g. still streaming to its own client

    task = asyncio.create_task(leader())
    await published.wait()
    async with cache.flight("k") as flight:
        assert not flight.is_leader
        assert flight.result == _result("live")
    release.set()
    await task
    assert cache.get("k") is not None  # stored when the leader's flight exited


async def test_flight_write_false_shares_but_does_not_store(cache: ResponseCache) -> None:
    async with cache.flight("k", write=False) as flight:
        flight.publish(_result())
    assert cache.get("k") is None


async def test_only_the_leader_publishes(cache: ResponseCache) -> None:
    async with cache.flight("k") as flight:
        flight.publish(_result())
        with pytest.raises(RuntimeError, match="already published"):
            flight.publish(_result())


async def test_no_cache_and_no_store_controls(cache: ResponseCache) -> None:
    calls = 0

    async def compute() -> Result:
        nonlocal calls
        calls += 1
        return _result(str(calls))

    _, status, _ = await cache.get_or_compute("k", compute, write=False)
    assert status == "MISS" and cache.get("k") is None
    result, status, _ = await cache.get_or_compute("k", compute, read=False)
    assert status == "BYPASS" and cache.get("k") is not None
    result, status, age = await cache.get_or_compute("k", compute)
    assert (result, status) == (_result("2"), "HIT") and age >= 0
    _, status, _ = await cache.get_or_compute("k", compute, read=False)
    assert status == "BYPASS" and calls == 3


def test_50_threads_compute_once(cache: ResponseCache) -> None:
    calls = 0
    lock = threading.Lock()
    results: list[tuple[Result, str, float]] = []

    def compute() -> Result:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(0.1)
        return _result("threaded")

    def call() -> None:
        outcome = cache.get_or_compute_sync("k", compute)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert calls == 1
    assert len(results) == 50 and {r[0] for r in results} == {_result("threaded")}
    assert [r[1] for r in results].count("MISS") == 1


def test_thread_leader_failure_hands_over(cache: ResponseCache) -> None:
    calls = 0
    lock = threading.Lock()
    outcomes: list[object] = []

    def compute() -> Result:
        nonlocal calls
        with lock:
            calls += 1
            mine = calls
        time.sleep(0.05)
        if mine == 1:
            raise RuntimeError("boom")
        return _result("recovered")

    def call() -> None:
        try:
            outcome: object = cache.get_or_compute_sync("k", compute)[0]
        except RuntimeError as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert calls == 2
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1
    assert outcomes.count(_result("recovered")) == 7
    hit = cache.get("k")
    assert hit is not None and hit.result == _result("recovered")


async def test_a_lone_miss_reads_the_store_once() -> None:
    class CountingStore(MemoryStore):
        reads = 0

        async def aget(self, key: str):  # type: ignore[no-untyped-def]
            CountingStore.reads += 1
            return await super().aget(key)

    cache = ResponseCache(CountingStore())

    async def compute() -> Result:
        return _result("v")

    _, status, _ = await cache.get_or_compute("k", compute)
    assert status == "MISS"
    assert CountingStore.reads == 1
    _, status, _ = await cache.get_or_compute("k", compute)
    assert status == "HIT"
    assert CountingStore.reads == 2
