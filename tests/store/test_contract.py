"""Behaviour every store shares, run against memory, sqlite and a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptcache.store import ResponseStore, open_store


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResponseStore]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cache.db"
    else:
        url = request.getfixturevalue("redis_server") + "?prefix=test:"
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def test_put_then_get_returns_the_value_and_its_creation_time(store: ResponseStore) -> None:
    before = time.time()
    store.put("k", b"\x00value\xff")
    entry = store.get("k")
    assert entry is not None
    assert entry.value == b"\x00value\xff"
    assert before - 1 <= entry.created_at <= time.time() + 1


def test_missing_key_is_none(store: ResponseStore) -> None:
    assert store.get("absent") is None


def test_put_replaces(store: ResponseStore) -> None:
    store.put("k", b"one")
    store.put("k", b"two")
    entry = store.get("k")
    assert entry is not None and entry.value == b"two"
    assert store.stats().entries == 1


def test_delete_and_clear(store: ResponseStore) -> None:
    for i in range(5):
        store.put(f"k{i}", b"v")
    assert store.delete("k0") is True
    assert store.delete("k0") is False
    assert store.get("k0") is None
    assert store.clear() == 4
    assert store.get("k1") is None
    assert store.stats().entries == 0


def test_ttl_expires_entries(store: ResponseStore) -> None:
    store.put("short", b"v", ttl=0.05)
    store.put("long", b"v", ttl=60)
    deadline = time.monotonic() + 5
    while store.get("short") is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.get("short") is None
    assert store.get("long") is not None


def test_stats_count_entries_bytes_hits_misses(store: ResponseStore) -> None:
    store.put("a", b"12345")
    store.put("b", b"678")
    store.get("a")
    store.get("a")
    store.get("nope")
    stats = store.stats()
    assert stats.entries == 2
    assert stats.bytes == len("a") + 5 + len("b") + 3
    assert (stats.hits, stats.misses) == (2, 1)
    assert stats.url == store.url


async def test_async_twins(store: ResponseStore) -> None:
    await store.aput("k", b"v")
    entry = await store.aget("k")
    assert entry is not None and entry.value == b"v"
    assert await store.adelete("k") is True
    await store.aput("k2", b"v")
    assert await store.aclear() == 1


def test_unicode_keys(store: ResponseStore) -> None:
    store.put("clé-漢", b"v")
    entry = store.get("clé-漢")
    assert entry is not None and entry.value == b"v"


def test_invalid_ttl_is_refused(store: ResponseStore) -> None:
    with pytest.raises(ValueError, match="ttl"):
        store.put("k", b"v", ttl=-1)
