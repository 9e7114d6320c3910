"""RedisStore's async twins run on redis-py's asyncio client (no worker thread), with the
sync calls' behaviour: the same entries, TTLs, counts and outage handling."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis

from promptcache.store import open_store
from promptcache.store.redis import RedisStore


def test_async_and_sync_calls_read_each_others_entries(redis_server: str) -> None:
    store = open_store(redis_server + "?prefix=p:")
    assert isinstance(store, RedisStore)

    async def scenario() -> None:
        await store.aput("a", b"from async", ttl=30)
        store.put("s", b"from sync")
        entry = store.get("a")
        assert entry is not None and entry.value == b"from async"
        entry = await store.aget("s")
        assert entry is not None and entry.value == b"from sync"
        assert await store.aget("absent") is None
        assert await store.adelete("s") is True
        assert await store.adelete("s") is False
        await store.flight_locks().aclose()

    asyncio.run(scenario())
    client = redis.Redis.from_url(redis_server)
    assert 0 < client.pttl("p:a") <= 30_000  # the TTL is Redis's own expiry, as for put
    client.close()
    stats = store.stats()  # async reads are counted with the sync ones
    assert (stats.entries, stats.hits, stats.misses) == (1, 2, 1)
    store.close()


def test_async_calls_on_an_unreachable_redis_are_misses(caplog: pytest.LogCaptureFixture) -> None:
    store = open_store("redis://127.0.0.1:1/0?socket_timeout=0.2")
    assert isinstance(store, RedisStore)

    async def scenario() -> None:
        assert await store.aget("k") is None
        await store.aput("k", b"v")  # dropped, no exception
        assert await store.adelete("k") is False

    with caplog.at_level(logging.WARNING, logger="promptcache.store.redis"):
        asyncio.run(scenario())
    assert store.available is False
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
