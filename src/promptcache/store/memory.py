"""In-process LRU store: max entries, max bytes, TTL; one lock, no I/O."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from promptcache.store._url import redact_url
from promptcache.store.base import (
    ResponseStore,
    StoredEntry,
    StoreStats,
    validate_limit,
    validate_ttl,
)


@dataclass(frozen=True, kw_only=True)
class MemoryStoreConfig:
    max_entries: int | None = 10_000
    max_bytes: int | None = 256 * 1024 * 1024
    ttl: float | None = None

    def __post_init__(self) -> None:
        validate_limit(self.max_entries, name="max_entries")
        validate_limit(self.max_bytes, name="max_bytes")
        validate_ttl(self.ttl)


class _Slot(NamedTuple):
    entry: StoredEntry
    expires_at: float | None
    size: int


class MemoryStore(ResponseStore):
    """Least-recently-used eviction over an ``OrderedDict`` (most recent last)."""

    def __init__(self, config: MemoryStoreConfig | None = None, *, url: str = "memory://") -> None:
        self.config = config or MemoryStoreConfig()
        self.url = redact_url(url)
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> StoredEntry | None:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                self._misses += 1
                return None
            if slot.expires_at is not None and slot.expires_at <= time.time():
                self._remove(key)
                self._misses += 1
                return None
            self._slots.move_to_end(key)
            self._hits += 1
            return slot.entry

    def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        ttl = validate_ttl(ttl) if ttl is not None else self.config.ttl
        now = time.time()
        size = len(key.encode("utf-8")) + len(value)
        slot = _Slot(StoredEntry(bytes(value), now), None if ttl is None else now + ttl, size)
        with self._lock:
            if key in self._slots:
                self._remove(key)
            if self.config.max_bytes is not None and size > self.config.max_bytes:
                return  # can never fit: storing it would only flush everything else
            self._slots[key] = slot
            self._bytes += size
            self._evict_over_budget()

    def delete(self, key: str) -> bool:
        with self._lock:
            if key not in self._slots:
                return False
            self._remove(key)
            return True

    def clear(self) -> int:
        with self._lock:
            count = len(self._slots)
            self._slots.clear()
            self._bytes = 0
            return count

    def stats(self) -> StoreStats:
        with self._lock:
            self._drop_expired()
            return StoreStats(
                url=self.url,
                entries=len(self._slots),
                bytes=self._bytes,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
            )

    # Nothing here blocks, so the async twins skip the thread hop.
    async def aget(self, key: str) -> StoredEntry | None:
        return self.get(key)

    async def aput(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self.put(key, value, ttl=ttl)

    async def adelete(self, key: str) -> bool:
        return self.delete(key)

    async def aclear(self) -> int:
        return self.clear()

    def _remove(self, key: str) -> None:
        slot = self._slots.pop(key)
        self._bytes -= slot.size

    def _evict_over_budget(self) -> None:
        max_entries, max_bytes = self.config.max_entries, self.config.max_bytes
        over = (max_entries is not None and len(self._slots) > max_entries) or (
            max_bytes is not None and self._bytes > max_bytes
        )
        if not over:
            return
        self._drop_expired()  # expired entries go first, and don't count as evictions
        while (max_entries is not None and len(self._slots) > max_entries) or (
            max_bytes is not None and self._bytes > max_bytes
        ):
            oldest = next(iter(self._slots))
            self._remove(oldest)
            self._evictions += 1

    def _drop_expired(self) -> None:
        now = time.time()
        expired = [
            k for k, s in self._slots.items() if s.expires_at is not None and s.expires_at <= now
        ]
        for key in expired:
            self._remove(key)
