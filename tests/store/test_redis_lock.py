"""Redis flight locks (RedisStore.flight_locks) against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis

from promptcache.store import open_store
from promptcache.store.base import LockUnavailable
from promptcache.store.redis import RedisStore
from promptcache.store.redis_lock import RedisFlightLocks


def _locks(url: str) -> RedisFlightLocks:
    store = open_store(url)
    assert isinstance(store, RedisStore)
    return store.flight_locks()


def test_one_owner_at_a_time_and_only_the_owner_releases(redis_server: str) -> None:
    async def scenario() -> None:
        gateway_a, gateway_b = _locks(redis_server), _locks(redis_server)
        held = await gateway_a.acquire("k")
        assert held is not None
        assert await gateway_b.acquire("k") is None  # held by A
        client = redis.Redis.from_url(redis_server)
        token = client.get("promptcache:__flight__:k")
        assert token is not None and len(token) == 32  # a random 128-bit token

        # Someone else's lock under the same name: A's release must not delete it.
        client.set("promptcache:__flight__:k", b"someone-else", px=5000)
        await held.release()
        assert client.get("promptcache:__flight__:k") == b"someone-else"
        assert await held.extend() is False  # not A's any more
        client.delete("promptcache:__flight__:k")

        again = await gateway_b.acquire("k")
        assert again is not None
        await again.release()
        assert client.exists("promptcache:__flight__:k") == 0
        client.close()
        await gateway_a.aclose()
        await gateway_b.aclose()

    asyncio.run(scenario())


def test_a_lock_expires_unless_extended(redis_server: str) -> None:
    async def scenario() -> None:
        locks = _locks(redis_server + "?lock_ttl=1")
        assert locks.ttl == pytest.approx(1.0)
        client = redis.Redis.from_url(redis_server)

        extended = await locks.acquire("kept")
        dropped = await locks.acquire("dropped")
        assert extended is not None and dropped is not None
        for _ in range(5):  # 1.5 s in all: past the TTL
            await asyncio.sleep(0.3)
            assert await extended.extend() is True
        assert client.exists("promptcache:__flight__:kept") == 1
        assert 0 < client.pttl("promptcache:__flight__:kept") <= 1000
        assert client.exists("promptcache:__flight__:dropped") == 0  # expired on its own
        assert await dropped.extend() is False
        assert await locks.acquire("dropped") is not None  # free for the next leader
        client.close()
        await locks.aclose()

    asyncio.run(scenario())


def test_release_wakes_a_watcher_and_a_silent_expiry_does_not(redis_server: str) -> None:
    async def scenario() -> None:
        leader, follower = _locks(redis_server + "?lock_ttl=0.2"), _locks(redis_server)
        held = await leader.acquire("k")
        assert held is not None
        async with follower.watch("k") as watch:
            assert await watch.released(0.05) is False  # nothing yet
            await held.release()
            assert await watch.released(2.0) is True
        dying = await leader.acquire("k")
        assert dying is not None
        async with follower.watch("k") as watch:
            # An expired lock (its leader died) announces nothing: waiters poll.
            assert await watch.released(0.4) is False
        assert await follower.acquire("k") is not None
        await leader.aclose()
        await follower.aclose()

    asyncio.run(scenario())


def test_unreachable_redis_is_lock_unavailable() -> None:
    async def scenario() -> None:
        locks = _locks("redis://127.0.0.1:1/0?socket_timeout=0.2")
        with pytest.raises(LockUnavailable):
            await locks.acquire("k")
        with pytest.raises(LockUnavailable):
            async with locks.watch("k"):
                pass

    asyncio.run(scenario())


def test_locks_are_not_entries_in_stats_or_clear(redis_server: str) -> None:
    async def scenario() -> None:
        with open_store(redis_server) as store:
            assert isinstance(store, RedisStore)
            store.put("entry", b"value")
            held = await store.flight_locks().acquire("entry")
            assert held is not None
            assert store.stats().entries == 1
            assert store.clear() == 1
            assert await held.extend() is True  # clearing entries leaves leaders their locks
            await held.release()
            await store.flight_locks().aclose()

    asyncio.run(scenario())


def test_lock_parameters_from_the_url_are_checked() -> None:
    locks = _locks("redis://127.0.0.1:1/0?lock_ttl=2s&lock_wait=1m")
    assert (locks.ttl, locks.wait) == (2.0, 60.0)
    assert _locks("redis://127.0.0.1:1/0?lock_wait=0").wait == 0.0  # never wait
    default = _locks("redis://127.0.0.1:1/0")
    assert (default.ttl, default.wait) == (5.0, 60.0)
    with pytest.raises(ValueError, match="lock_ttl"):
        open_store("redis://127.0.0.1:1/0?lock_ttl=0")
    with pytest.raises(ValueError, match="lock_wait"):
        open_store("redis://127.0.0.1:1/0?lock_wait=soon")


def test_stores_without_locks_say_so() -> None:
    assert open_store("memory://").flight_locks() is None
