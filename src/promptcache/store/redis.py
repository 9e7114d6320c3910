"""Redis store: the shared response cache for several server processes or hosts.

Each entry is one Redis string ``<prefix><key>`` holding an 8-byte
big-endian creation time followed by the value, written with one ``SET``
(``PX`` for the TTL), so an entry is atomic and expires on its own.
The async twins (``aget``, ``aput``, ``adelete``) use redis-py's asyncio
client rather than a worker thread: a thread hop per call, and the GIL hand-offs
between it and the event loop, cost more than the Redis call itself.
Hit/miss counts are buffered in-process and added to the hash
``<prefix>__stats__`` in batches; ``stats`` counts entries and bytes with
``SCAN`` (it is an admin call, not a hot path). Evictions are Redis's own
(``maxmemory`` policy), reported from ``INFO stats``.

:meth:`RedisStore.flight_locks` gives the processes sharing one Redis per-key
locks (:mod:`promptcache.store.redis_lock`) so that concurrent identical
misses across them compute once; lock names are left out of ``stats`` and
``clear``.

Redis being down never fails a caller: a lookup is a miss, a write is
dropped, and a warning is logged at most once per ``warn_interval``. The
client reconnects by itself once Redis is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from promptcache.store._url import redact_url
from promptcache.store.base import ResponseStore, StoredEntry, StoreStats, validate_ttl
from promptcache.store.redis_lock import (
    DEFAULT_LOCK_TTL,
    DEFAULT_LOCK_WAIT,
    LOCK_INFIX,
    LoopClients,
    RedisFlightLocks,
)

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">d")
_STATS_SUFFIX = "__stats__"
_SCAN_BATCH = 500
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RedisStoreConfig:
    url: str = "redis://127.0.0.1:6379/0"
    """What the client connects to, credentials included: shown only redacted."""
    prefix: str = "promptcache:"
    ttl: float | None = None
    socket_timeout: float = 0.5
    """Seconds before a slow or dead Redis counts as unavailable."""
    warn_interval: float = 30.0
    flush_every: int = 256
    flush_interval: float = 5.0
    lock_ttl: float = DEFAULT_LOCK_TTL
    """Seconds a cross-process flight lock outlives a leader that stopped extending it."""
    lock_wait: float = DEFAULT_LOCK_WAIT
    """Seconds a miss waits for another process's leader before computing itself."""

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["url"] = redact_url(self.url)
        return f"RedisStoreConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"Not a Redis URL: {redact_url(self.url)!r}")
        validate_ttl(self.ttl)
        validate_ttl(self.socket_timeout, name="socket_timeout")
        if self.warn_interval < 0 or self.flush_interval < 0 or self.flush_every < 1:
            raise ValueError("warn_interval/flush_interval must be >= 0 and flush_every >= 1")
        validate_ttl(self.lock_ttl, name="lock_ttl")
        if isinstance(self.lock_wait, bool) or not self.lock_wait >= 0:
            raise ValueError(f"lock_wait must be >= 0 seconds, got {self.lock_wait!r}")


class RedisStore(ResponseStore):
    def __init__(self, config: RedisStoreConfig, *, url: str | None = None) -> None:
        self.config = config
        # Shown in stats, logs and reprs; only the client gets config.url's password.
        self.url = redact_url(url or config.url)
        self._client: redis_lib.Redis[bytes] = redis_lib.Redis.from_url(
            config.url,
            socket_timeout=config.socket_timeout,
            socket_connect_timeout=config.socket_timeout,
            # One immediate retry re-dials a connection that died with a
            # restarted server; more would only slow down misses while it is down.
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        self._stats_key = f"{config.prefix}{_STATS_SUFFIX}"
        self._lock = threading.Lock()
        self._pending = {"hits": 0, "misses": 0}
        self._pending_ops = 0
        self._last_flush = time.monotonic()
        self._last_warning = float("-inf")
        self._async_clients = LoopClients(config.url, socket_timeout=config.socket_timeout)
        self._locks = RedisFlightLocks(
            self._async_clients, prefix=config.prefix, ttl=config.lock_ttl, wait=config.lock_wait
        )
        self._lock_prefix = f"{config.prefix}{LOCK_INFIX}".encode()

    def _name(self, key: str) -> str:
        return self.config.prefix + key

    def flight_locks(self) -> RedisFlightLocks:
        return self._locks

    def _is_entry(self, name: bytes) -> bool:
        """An entry's name, not the stats hash's nor a flight lock's."""
        return name != self._stats_key.encode() and not name.startswith(self._lock_prefix)

    def get(self, key: str) -> StoredEntry | None:
        raw: bytes | None = self._guarded("get", self._client.get, self._name(key))
        entry = _entry(raw)
        if self._count("hits" if entry is not None else "misses"):
            self.flush()
        return entry

    def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        payload, px = self._payload(value, ttl)
        self._guarded("put", self._client.set, self._name(key), payload, px=px)

    def delete(self, key: str) -> bool:
        removed: int | None = self._guarded("delete", self._client.delete, self._name(key))
        return bool(removed)

    async def aget(self, key: str) -> StoredEntry | None:
        raw: bytes | None = await self._aguarded("get", self._async_clients.get().get, key)
        entry = _entry(raw)
        if self._count("hits" if entry is not None else "misses"):
            await asyncio.to_thread(self.flush)  # a batch now and then: not worth a second path
        return entry

    async def aput(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        payload, px = self._payload(value, ttl)
        await self._aguarded("put", self._async_clients.get().set, key, payload, px=px)

    async def adelete(self, key: str) -> bool:
        removed: int | None = await self._aguarded("delete", self._async_clients.get().delete, key)
        return bool(removed)

    def _payload(self, value: bytes, ttl: float | None) -> tuple[bytes, int | None]:
        """The stored bytes (creation time, then the value) and the expiry in ms."""
        ttl = validate_ttl(ttl) if ttl is not None else self.config.ttl
        px = None if ttl is None else max(1, round(ttl * 1000))
        return _HEADER.pack(time.time()) + value, px

    def clear(self) -> int:
        def clear_all() -> int:
            removed = 0
            batch: list[bytes] = []
            for name in self._client.scan_iter(match=self._pattern(), count=_SCAN_BATCH):
                if self._is_entry(name):
                    batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    removed += int(self._client.unlink(*batch))
                    batch = []
            if batch:
                removed += int(self._client.unlink(*batch))
            return removed

        return self._guarded("clear", clear_all) or 0

    def stats(self) -> StoreStats:
        self.flush()

        def measure() -> StoreStats:
            entries = total = 0
            names = [
                n
                for n in self._client.scan_iter(match=self._pattern(), count=_SCAN_BATCH)
                if self._is_entry(n)
            ]
            prefix_len = len(self.config.prefix.encode())
            for start in range(0, len(names), _SCAN_BATCH):
                chunk = names[start : start + _SCAN_BATCH]
                pipe = self._client.pipeline(transaction=False)
                for name in chunk:
                    pipe.strlen(name)
                for name, length in zip(chunk, pipe.execute(), strict=True):
                    if length:  # 0: expired between SCAN and STRLEN
                        entries += 1
                        total += int(length) - _HEADER.size + len(name) - prefix_len
            counters = self._client.hgetall(self._stats_key)
            info: Mapping[str, Any] = self._client.info("stats")
            return StoreStats(
                url=self.url,
                entries=entries,
                bytes=total,
                hits=int(counters.get(b"hits", 0)),
                misses=int(counters.get(b"misses", 0)),
                evictions=int(info.get("evicted_keys", 0)),
            )

        measured: StoreStats | None = self._guarded("stats", measure)
        if measured is None:
            return StoreStats(url=self.url, entries=0, bytes=0, hits=0, misses=0, evictions=0)
        return measured

    def flush(self) -> None:
        """Add buffered hit/miss counts to the shared stats hash (dropped if Redis is down)."""
        with self._lock:
            pending, self._pending = self._pending, {"hits": 0, "misses": 0}
            self._pending_ops = 0
            self._last_flush = time.monotonic()
        if not any(pending.values()):
            return

        def add() -> None:
            pipe = self._client.pipeline(transaction=False)
            for field, amount in pending.items():
                if amount:
                    pipe.hincrby(self._stats_key, field, amount)
            pipe.execute()

        self._guarded("stats update", add)

    def ping(self) -> bool:
        """True if Redis answers now."""
        return bool(self._guarded("ping", self._client.ping))

    def close(self) -> None:
        self.flush()
        self._client.close()

    def _count(self, field: str) -> bool:
        """Count a hit or miss; True when the buffered counts are due to be flushed."""
        with self._lock:
            self._pending[field] += 1
            self._pending_ops += 1
            return self._pending_ops >= self.config.flush_every or (
                time.monotonic() - self._last_flush >= self.config.flush_interval
            )

    def _pattern(self) -> str:
        # Escape glob characters so a prefix like "a*" matches only itself.
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.config.prefix)
        return escaped + "*"

    def _guarded(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis call; on any Redis error log (rate-limited) and return None."""
        try:
            result = call(*args, **kwargs)
        except redis_lib.RedisError as exc:
            self._unavailable(what, exc)
            return None
        self.available = True
        return result

    async def _aguarded(self, what: str, call: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`_guarded` for one asyncio-client call on ``key``'s name."""
        try:
            result = await call(self._name(key), *args, **kwargs)
        except redis_lib.RedisError as exc:
            self._unavailable(what, exc)
            return None
        self.available = True
        return result

    def _unavailable(self, what: str, exc: redis_lib.RedisError) -> None:
        """Note an outage, warning at most once per ``warn_interval``."""
        self.available = False
        now = time.monotonic()
        with self._lock:
            warn = now - self._last_warning >= self.config.warn_interval
            if warn:
                self._last_warning = now
        if warn:
            logger.warning(
                "promptcache: Redis at %s unavailable during %s (%s: %s); serving misses "
                "and dropping writes until it is back",
                self.url,
                what,
                type(exc).__name__,
                exc,
            )

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"


def _entry(raw: bytes | None) -> StoredEntry | None:
    """A stored string back as its entry (None: absent, or too short to be one)."""
    if raw is None or len(raw) < _HEADER.size:
        return None
    return StoredEntry(raw[_HEADER.size :], _HEADER.unpack_from(raw)[0])
