"""The one interface every response-cache store implements.

A store maps string keys to opaque byte values with an optional TTL. It
knows nothing of requests, results or models: :mod:`promptcache.response_cache`
and the LangChain adapter put bytes in and take bytes out.

The async twins default to running the sync call on a worker thread; stores
whose operations never block (memory) override them to call directly.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Self


@dataclass(frozen=True, slots=True)
class StoredEntry:
    value: bytes
    created_at: float
    """Unix seconds at which the entry was written."""


@dataclass(frozen=True, kw_only=True)
class StoreStats:
    url: str
    entries: int
    bytes: int
    """Bytes of stored keys and values (what the ``max_bytes`` budget counts)."""
    hits: int
    misses: int
    evictions: int
    """Entries removed to respect ``max_entries``/``max_bytes`` (not TTL expiry)."""

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class ResponseStore(ABC):
    """Bytes by key, with TTL. Thread-safe; usable from asyncio via the ``a*`` twins."""

    url: str
    available: bool = True
    """Whether the backing service answered the last call. Stores that turn their own
    outages into misses (Redis) keep it; health checks and metrics read it."""

    @abstractmethod
    def get(self, key: str) -> StoredEntry | None:
        """The live entry for ``key``, or None (absent or expired)."""

    @abstractmethod
    def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` (replacing any entry); ``ttl`` seconds overrides the store default."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if an entry was removed."""

    @abstractmethod
    def clear(self) -> int:
        """Remove every entry; returns how many were removed."""

    @abstractmethod
    def stats(self) -> StoreStats: ...

    def ping(self) -> bool:
        """True if the store answers a read now (readiness probes call this)."""
        self.get("promptcache:ping")
        return self.available

    def close(self) -> None:  # noqa: B027 - stores without resources need nothing
        """Release connections and flush pending bookkeeping. Idempotent."""

    async def aget(self, key: str) -> StoredEntry | None:
        return await asyncio.to_thread(self.get, key)

    async def aput(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await asyncio.to_thread(self.put, key, value, ttl=ttl)

    async def adelete(self, key: str) -> bool:
        return await asyncio.to_thread(self.delete, key)

    async def aclear(self) -> int:
        return await asyncio.to_thread(self.clear)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def validate_ttl(ttl: float | None, *, name: str = "ttl") -> float | None:
    """A TTL must be a positive number of seconds (None: never expires)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {ttl!r}")
    return float(ttl)


def validate_limit(value: int | None, *, name: str) -> int | None:
    """A size limit must be a positive integer (None: unlimited)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value
