"""Named, pinned prefixes (Gemini's cached contents): ids, tenants and TTLs over cache holds.

A named prefix is a prompt prefix the engine prefilled and then *held* in the
prefix cache (:meth:`~promptcache.prefix.base.BasePrefixCache.hold`): its full
blocks are pinned -- never evicted, counted against the pinned cap -- until the
prefix is deleted or its TTL runs out. Unlike a breakpoint's pin, a hit does
not extend it: the expiry is the one the caller set (``PATCH`` changes it).

:class:`NamedPrefixes` is the registry: one per engine, tenant-scoped (a tenant
never sees, changes or deletes another's prefix: to it, a foreign id does not
exist). Expiry is lazy, on the registry's own ``clock`` (wall time, since
``expires_at`` is shown to users): :meth:`NamedPrefixes.expire` runs before
every registry operation, and the engine calls it before each request, the only
time the cache may need the room. Thread-safe.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from promptcache.prefix.base import BasePrefixCache, PrefixHold
from promptcache.result import PinnedPrefix

__all__ = ["MAX_PREFIXES", "NamedPrefixes", "PinnedPrefix"]

MAX_PREFIXES = 4096
"""Named prefixes kept at once, all tenants together (identical prefixes share blocks, so
the pinned cap alone would not bound the records)."""


@dataclass(frozen=True, kw_only=True)
class _Entry:
    tenant: str
    prefix: PinnedPrefix
    hold: PrefixHold


class NamedPrefixes:
    """The named prefixes held in ``cache``, by tenant and id."""

    def __init__(
        self,
        cache: BasePrefixCache,
        *,
        clock: Callable[[], float] = time.time,
        max_prefixes: int = MAX_PREFIXES,
    ) -> None:
        self._cache = cache
        self._clock = clock
        self._max_prefixes = max_prefixes
        self._entries: dict[str, _Entry] = {}
        self._next_expiry = math.inf
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def room(self) -> bool:
        """Whether one more prefix may be added (checked before paying for its prefill)."""
        self.expire()
        with self._lock:
            return len(self._entries) < self._max_prefixes

    @property
    def max_prefixes(self) -> int:
        return self._max_prefixes

    def add(
        self,
        *,
        tenant: str,
        model: str,
        name: str | None,
        tokens: int,
        hold: PrefixHold,
        ttl_seconds: float,
    ) -> PinnedPrefix:
        """Register ``hold`` (the registry now owns it) for ``ttl_seconds`` from now."""
        now = self._clock()
        prefix = PinnedPrefix(
            id=f"pfx_{secrets.token_hex(12)}",
            model=model,
            name=name,
            tokens=tokens,
            cached_tokens=hold.num_tokens,
            ttl_seconds=ttl_seconds,
            created_at=now,
            expires_at=now + ttl_seconds,
        )
        with self._lock:
            self._entries[prefix.id] = _Entry(tenant=tenant, prefix=prefix, hold=hold)
            self._next_expiry = min(self._next_expiry, prefix.expires_at)
        return prefix

    def list(self, tenant: str) -> list[PinnedPrefix]:
        """The tenant's live prefixes, oldest first."""
        self.expire()
        with self._lock:
            found = [e.prefix for e in self._entries.values() if e.tenant == tenant]
        return sorted(found, key=lambda prefix: (prefix.created_at, prefix.id))

    def get(self, tenant: str, prefix_id: str) -> PinnedPrefix | None:
        self.expire()
        with self._lock:
            entry = self._entries.get(prefix_id)
            return entry.prefix if entry is not None and entry.tenant == tenant else None

    def retime(self, tenant: str, prefix_id: str, ttl_seconds: float) -> PinnedPrefix | None:
        """A new expiry, ``ttl_seconds`` from now (shorter or longer than the old one)."""
        self.expire()
        now = self._clock()
        with self._lock:
            entry = self._entries.get(prefix_id)
            if entry is None or entry.tenant != tenant:
                return None
            prefix = replace(entry.prefix, ttl_seconds=ttl_seconds, expires_at=now + ttl_seconds)
            self._entries[prefix_id] = replace(entry, prefix=prefix)
            self._next_expiry = min(self._next_expiry, prefix.expires_at)
        return prefix

    def remove(self, tenant: str, prefix_id: str) -> PinnedPrefix | None:
        """Unpin and forget the prefix; None when the tenant has no such prefix."""
        self.expire()
        with self._lock:
            entry = self._entries.get(prefix_id)
            if entry is None or entry.tenant != tenant:
                return None
            del self._entries[prefix_id]
        self._cache.release_hold(entry.hold)
        return entry.prefix

    def expire(self) -> int:
        """Unpin the prefixes whose TTL ran out; how many. Cheap when none is due."""
        now = self._clock()
        with self._lock:
            if now < self._next_expiry:
                return 0
            gone = [e for e in self._entries.values() if e.prefix.expires_at <= now]
            for entry in gone:
                del self._entries[entry.prefix.id]
            self._next_expiry = min(
                (e.prefix.expires_at for e in self._entries.values()), default=math.inf
            )
        for entry in gone:
            self._cache.release_hold(entry.hold)
        return len(gone)

    def clear(self) -> int:
        """Unpin and forget every prefix (``DELETE /v1/cache``); how many."""
        with self._lock:
            gone = list(self._entries.values())
            self._entries.clear()
            self._next_expiry = math.inf
        for entry in gone:
            self._cache.release_hold(entry.hold)
        return len(gone)
