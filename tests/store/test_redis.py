"""The Redis store against a real redis-server, including one that dies and comes back."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from promptcache.store import open_store
from promptcache.store.redis import RedisStore
from tests.conftest import RedisProcess


def test_ttl_is_a_redis_expiry_and_keys_carry_the_prefix(redis_server: str) -> None:
    with open_store(redis_server + "?prefix=app1:") as store:
        store.put("k", b"v", ttl=30)
    client = redis.Redis.from_url(redis_server)
    assert client.exists("app1:k") == 1
    assert 0 < client.pttl("app1:k") <= 30_000
    client.close()


def test_prefixes_partition_one_server(redis_server: str) -> None:
    with open_store(redis_server + "?prefix=a:") as a, open_store(redis_server + "?prefix=b:") as b:
        a.put("k", b"from a")
        assert b.get("k") is None
        b.put("k", b"from b")
        assert b.clear() == 1
        entry = a.get("k")
        assert entry is not None and entry.value == b"from a"
        assert a.stats().entries == 1


def test_store_default_ttl_from_url(redis_server: str) -> None:
    with open_store(redis_server + "?ttl=1h") as store:
        store.put("k", b"v")
    client = redis.Redis.from_url(redis_server)
    assert 3_500_000 < client.pttl("promptcache:k") <= 3_600_000
    client.close()


def test_unreachable_redis_degrades_to_misses_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_store("redis://127.0.0.1:1/0")
    assert isinstance(store, RedisStore)
    with caplog.at_level(logging.WARNING, logger="promptcache.store.redis"):
        assert store.get("k") is None
        store.put("k", b"v")  # dropped, no exception
        assert store.delete("k") is False
        assert store.clear() == 0
        assert store.stats().entries == 0
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    store.close()


def test_redis_killed_mid_run_degrades_then_recovers(
    redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(redis_process.url)
    store.put("before", b"1")
    assert store.get("before") is not None

    redis_process.kill()
    with caplog.at_level(logging.WARNING, logger="promptcache.store.redis"):
        assert store.get("before") is None  # a miss, not an exception
        store.put("during", b"2")  # dropped
    assert any("unavailable" in r.getMessage() for r in caplog.records)

    redis_process.start()  # same port, empty (no persistence)
    deadline = time.monotonic() + 10
    recovered = False
    while time.monotonic() < deadline and not recovered:
        store.put("after", b"3")
        entry = store.get("after")
        recovered = entry is not None and entry.value == b"3"
        if not recovered:
            time.sleep(0.05)
    assert recovered
    assert store.stats().entries == 1
    store.close()
