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
from contextlib import AbstractAsyncContextManager
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

    def flight_locks(self) -> FlightLocks | None:
        """Locks that several processes sharing this store can coalesce misses with.

        None (the default): the store is private to one process, or cannot lock;
        the response cache then coalesces within its own process only.
        """
        return None

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


class LockUnavailable(Exception):
    """The lock service did not answer: coalesce within this process only."""


class FlightLock(ABC):
    """One held cross-process flight lock (see :class:`FlightLocks`)."""

    @abstractmethod
    async def extend(self) -> bool:
        """Reset the lock's expiry to the full TTL; False if it is no longer this owner's.

        Raises :class:`LockUnavailable` when the service does not answer.
        """

    @abstractmethod
    async def release(self) -> bool:
        """Release the lock if this owner still holds it, and wake its waiters; False
        when it was no longer this owner's (it expired, or another took it).

        Raises :class:`LockUnavailable` when the service does not answer (the lock
        then expires on its own).
        """


class FlightWatch(ABC):
    """A subscription to one key's lock releases, taken before the waiter looks."""

    @abstractmethod
    async def released(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a release; True if one was announced."""


class FlightLocks(ABC):
    """Per-key locks with an expiry, shared by every process on one store.

    The first process to miss a key takes its lock and computes; the others
    :meth:`watch` it and read the entry the leader stores. A lock expires
    ``ttl`` seconds after it was taken or last extended, so a dead leader's
    waiters take over quickly while a live one extends it.
    """

    ttl: float
    """Seconds a lock lives without being extended."""
    wait: float
    """Seconds a waiter waits for another process's leader before computing itself."""

    @abstractmethod
    async def acquire(self, key: str) -> FlightLock | None:
        """Take ``key``'s lock: the held lock, or None when another owner holds it.

        Raises :class:`LockUnavailable` when the service does not answer.
        """

    @abstractmethod
    def watch(self, key: str) -> AbstractAsyncContextManager[FlightWatch]:
        """Subscribe to ``key``'s releases (raises :class:`LockUnavailable` on entry)."""


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
