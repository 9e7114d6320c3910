"""Coalescing across ResponseCache instances on one Redis (each its own FlightTable, as
two gateway processes have): leaders, followers, takeovers, bounds and fallbacks.

The process-level version (two real ``promptcache serve`` processes) is
tests/test_cross_gateway.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import pytest
import redis

from promptcache.response_cache import CacheStatus, Lead, ResponseCache
from promptcache.result import Choice, Result, Usage
from promptcache.store import open_store
from promptcache.store.redis import RedisStore
from promptcache.store.redis_lock import LOCK_INFIX


def _result(text: str) -> Result:
    return Result(
        id=f"r-{text}",
        model="m",
        created=1_700_000_000,
        choices=(Choice(text=text, finish_reason="stop"),),
        usage=Usage(input_tokens=3, output_tokens=1),
    )


class Upstream:
    """Counts computations; each takes ``delay`` seconds (and raises for ``failing`` callers)."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.calls = 0
        self.failing: set[str] = set()

    async def compute(self, by: str) -> Result:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if by in self.failing:
            raise RuntimeError("upstream failed")
        return _result(f"answer #{self.calls} computed by {by}")


def _cache(url: str) -> ResponseCache:
    return ResponseCache(open_store(url))


async def _until_locked(url: str, key: str) -> None:
    """Wait (bounded) until some process holds ``key``'s flight lock."""
    client = redis.Redis.from_url(url)
    try:
        for _ in range(250):
            if client.exists(f"promptcache:{LOCK_INFIX}{key}"):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"nobody took the lock on {key}")
    finally:
        client.close()


async def _until_followed(url: str, key: str) -> None:
    """Wait (bounded) until some process watches ``key``'s lock as a follower."""
    client = redis.Redis.from_url(url)
    try:
        for _ in range(250):
            if client.pubsub_numsub(f"promptcache:{LOCK_INFIX}{key}")[0][1] >= 1:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"nobody follows the lock on {key}")
    finally:
        client.close()


def _counts(cache: ResponseCache) -> dict[str, int]:
    counts = cache.coalescing_counts()
    assert counts is not None
    return counts


def test_concurrent_misses_on_two_caches_compute_once(redis_server: str) -> None:
    upstream = Upstream()
    gateway_a, gateway_b = _cache(redis_server), _cache(redis_server)

    async def scenario() -> list[tuple[Result, CacheStatus, float]]:
        calls = [
            cache.get_or_compute("k", functools.partial(upstream.compute, name))
            for cache, name in [(gateway_a, "a"), (gateway_b, "b")] * 8
        ]
        return await asyncio.gather(*calls)

    outcomes = asyncio.run(scenario())
    assert upstream.calls == 1
    assert len({result.choices[0].text for result, _, _ in outcomes}) == 1
    assert [status for _, status, _ in outcomes].count(CacheStatus.MISS) == 1
    # One lock per key per process: eight local callers are one lead or one follow.
    totals = {k: _counts(gateway_a)[k] + _counts(gateway_b)[k] for k in _counts(gateway_a)}
    assert totals == {
        "leads": 1,
        "follows": 1,
        "takeovers": 0,
        "wait_timeouts": 0,
        "unavailable": 0,
        "locks_lost": 0,
    }
    # The entry is shared: a later miss on either side is a stored hit.
    assert gateway_b.get("k") is not None and gateway_a.get("k") is not None


def test_a_failed_leader_shares_nothing_and_a_follower_leads_again(redis_server: str) -> None:
    upstream = Upstream()
    gateway_a, gateway_b = _cache(redis_server), _cache(redis_server)

    async def scenario() -> tuple[BaseException | None, list[Result]]:
        upstream.failing.add("a")
        leading = asyncio.create_task(gateway_a.get_or_compute("k", lambda: upstream.compute("a")))
        await _until_locked(redis_server, "k")
        followers = [gateway_b.get_or_compute("k", lambda: upstream.compute("b")) for _ in range(4)]
        done = await asyncio.gather(leading, *followers, return_exceptions=True)
        error = done[0] if isinstance(done[0], BaseException) else None
        return error, [outcome[0] for outcome in done[1:] if isinstance(outcome, tuple)]

    upstream_error, served = asyncio.run(scenario())
    assert isinstance(upstream_error, RuntimeError)  # the leader's own caller sees its error
    assert len(served) == 4 and {r.choices[0].text for r in served} == {"answer #2 computed by b"}
    assert upstream.calls == 2
    assert _counts(gateway_b)["takeovers"] == 1


def test_a_dead_leaders_lock_expires_and_a_follower_takes_over(redis_server: str) -> None:
    url = redis_server + "?lock_ttl=1"
    dead = open_store(url)
    assert isinstance(dead, RedisStore)
    gateway = _cache(url)
    upstream = Upstream(delay=0.05)

    async def scenario() -> Result:
        # A leader that took the lock and died: never extended, never released.
        assert await dead.flight_locks().acquire("k") is not None
        result, status, _ = await gateway.get_or_compute("k", lambda: upstream.compute("b"))
        assert status is CacheStatus.MISS
        return result

    assert asyncio.run(scenario()).choices[0].text == "answer #1 computed by b"
    assert _counts(gateway)["takeovers"] == 1
    # The lookup, the look after subscribing, the re-read after taking over: polls
    # that heard no release only tried the lock, and counted no store miss.
    assert gateway.store.stats().misses == 3


def test_a_live_leader_keeps_its_lock_past_the_ttl(redis_server: str) -> None:
    url = redis_server + "?lock_ttl=1"
    gateway_a, gateway_b = _cache(url), _cache(url)
    upstream = Upstream(delay=3.0)  # three TTLs long

    async def scenario() -> list[tuple[Result, CacheStatus, float]]:
        leading = asyncio.create_task(gateway_a.get_or_compute("k", lambda: upstream.compute("a")))
        await _until_locked(redis_server, "k")
        await asyncio.sleep(2.2)  # past two TTLs: only extension keeps the lock
        following = gateway_b.get_or_compute("k", lambda: upstream.compute("b"))
        return list(await asyncio.gather(leading, following))

    outcomes = asyncio.run(scenario())
    assert upstream.calls == 1
    assert outcomes[1][1] is CacheStatus.HIT
    assert _counts(gateway_a)["locks_lost"] == 0 and _counts(gateway_b)["follows"] == 1
    client = redis.Redis.from_url(redis_server)
    assert list(client.scan_iter(match=f"promptcache:{LOCK_INFIX}*")) == []  # released
    client.close()


def test_a_leader_cancelled_while_storing_stores_before_it_releases(
    redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_a, gateway_b = _cache(redis_server), _cache(redis_server)
    upstream = Upstream()
    store_put = gateway_a.store.aput

    async def slow_put(key: str, value: bytes, *, ttl: float | None = None) -> None:
        await asyncio.sleep(0.3)
        await store_put(key, value, ttl=ttl)

    monkeypatch.setattr(gateway_a.store, "aput", slow_put)

    async def scenario() -> tuple[Result, CacheStatus, float]:
        lead = await gateway_a.lookup_or_lead("k")
        assert isinstance(lead, Lead)
        following = asyncio.create_task(
            gateway_b.get_or_compute("k", lambda: upstream.compute("b"))
        )
        await _until_followed(redis_server, "k")
        lead.publish(_result("from a"))
        finishing = asyncio.create_task(lead.finish())
        await asyncio.sleep(0.05)
        finishing.cancel()  # a streaming client hung up while its entry was being stored
        with contextlib.suppress(asyncio.CancelledError):
            await finishing
        return await following

    result, status, _ = asyncio.run(scenario())
    assert (result.choices[0].text, status) == ("from a", CacheStatus.HIT)
    assert upstream.calls == 0 and _counts(gateway_b)["takeovers"] == 0


def test_the_wait_is_bounded_by_lock_wait(redis_server: str) -> None:
    url = redis_server + "?lock_ttl=5&lock_wait=0.3"
    holder = open_store(url)
    assert isinstance(holder, RedisStore)
    gateway = _cache(url)
    upstream = Upstream(delay=0.01)

    async def scenario() -> CacheStatus:
        held = await holder.flight_locks().acquire("k")  # alive, and never finishing
        assert held is not None
        _, status, _ = await gateway.get_or_compute("k", lambda: upstream.compute("b"))
        await held.release()
        return status

    assert asyncio.run(scenario()) is CacheStatus.MISS
    assert _counts(gateway)["wait_timeouts"] == 1


def test_no_store_misses_are_not_coalesced_across_processes(redis_server: str) -> None:
    gateway_a, gateway_b = _cache(redis_server), _cache(redis_server)
    upstream = Upstream(delay=0.2)

    async def scenario() -> None:
        await asyncio.gather(
            gateway_a.get_or_compute("k", lambda: upstream.compute("a"), write=False),
            gateway_b.get_or_compute("k", lambda: upstream.compute("b"), write=False),
        )

    asyncio.run(scenario())
    assert upstream.calls == 2  # nothing stored, so nothing to share through the store
    assert set(_counts(gateway_a).values()) == {0} and set(_counts(gateway_b).values()) == {0}


def test_unreachable_redis_falls_back_to_in_process_coalescing() -> None:
    gateway = _cache("redis://127.0.0.1:1/0?socket_timeout=0.2")
    upstream = Upstream(delay=0.1)

    async def scenario() -> list[tuple[Result, CacheStatus, float]]:
        calls = [gateway.get_or_compute("k", lambda: upstream.compute("a")) for _ in range(4)]
        return list(await asyncio.gather(*calls))

    outcomes = asyncio.run(scenario())
    assert upstream.calls == 1  # still coalesced within the process
    assert {result.choices[0].text for result, _, _ in outcomes} == {"answer #1 computed by a"}
    assert _counts(gateway)["unavailable"] == 1


def test_a_cancelled_follower_leaves_no_subscription_or_lock(redis_server: str) -> None:
    holder = open_store(redis_server)
    assert isinstance(holder, RedisStore)
    gateway = _cache(redis_server)
    client = redis.Redis.from_url(redis_server)

    async def scenario() -> None:
        held = await holder.flight_locks().acquire("k")
        assert held is not None
        waiting = asyncio.create_task(
            gateway.get_or_compute("k", functools.partial(Upstream().compute, "b"))
        )
        channel = f"promptcache:{LOCK_INFIX}k"
        await _until_followed(redis_server, "k")
        waiting.cancel()  # the client went away (or its deadline passed)
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.05)
        assert client.pubsub_numsub(channel)[0][1] == 0
        await held.release()

    asyncio.run(scenario())
    client.close()


def test_stores_without_locks_coalesce_in_process_only() -> None:
    assert _cache("memory://").coalescing_counts() is None


@pytest.fixture(autouse=True)
def _quiet_redis_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="promptcache.store.redis")
