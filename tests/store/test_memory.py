from __future__ import annotations

import threading

import pytest

from promptcache.store import MemoryStore, MemoryStoreConfig


def test_lru_by_entries_keeps_recently_used() -> None:
    store = MemoryStore(MemoryStoreConfig(max_entries=3, max_bytes=None))
    for key in ("a", "b", "c"):
        store.put(key, b"v")
    store.get("a")  # a is now the most recent
    store.put("d", b"v")
    assert store.get("b") is None
    assert all(store.get(k) is not None for k in ("a", "c", "d"))
    assert store.stats().evictions == 1


def test_lru_by_bytes() -> None:
    store = MemoryStore(MemoryStoreConfig(max_entries=None, max_bytes=30))
    for key in ("a", "b", "c"):
        store.put(key, b"x" * 9)  # 10 bytes each with the key
    store.put("d", b"x" * 9)
    stats = store.stats()
    assert stats.entries == 3 and stats.bytes == 30
    assert store.get("a") is None


def test_an_entry_larger_than_the_budget_is_not_stored_and_evicts_nothing() -> None:
    store = MemoryStore(MemoryStoreConfig(max_bytes=20))
    store.put("a", b"v")
    store.put("big", b"x" * 100)
    assert store.get("big") is None
    assert store.get("a") is not None


def test_store_default_ttl_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("promptcache.store.memory.time.time", lambda: now[0])
    store = MemoryStore(MemoryStoreConfig(ttl=10))
    store.put("k", b"v")
    now[0] += 9
    assert store.get("k") is not None
    now[0] += 2
    assert store.get("k") is None
    assert store.stats().evictions == 0  # expiry is not eviction


def test_thread_safety_under_concurrent_puts_and_gets() -> None:
    store = MemoryStore(MemoryStoreConfig(max_entries=50, max_bytes=None))

    def work(offset: int) -> None:
        for i in range(500):
            store.put(f"k{(offset + i) % 80}", b"v" * (i % 7))
            store.get(f"k{i % 80}")

    threads = [threading.Thread(target=work, args=(n * 13,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    stats = store.stats()
    assert stats.entries <= 50
    entries = {k: store.get(k) for k in list(store._slots)}
    assert stats.bytes == sum(len(k) + len(e.value) for k, e in entries.items() if e is not None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_bytes": -5}, "max_bytes"),
        ({"ttl": 0}, "ttl"),
    ],
)
def test_config_validation(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MemoryStoreConfig(**kwargs)
