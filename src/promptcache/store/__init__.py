"""Response-cache stores behind one interface, opened by URL.

``memory://?max_entries=..&max_bytes=..&ttl=..`` (in-process LRU),
``sqlite:///relative/path.db?max_bytes=..&ttl=..`` (one file, several
processes; ``sqlite:////absolute/path.db``),
``redis://host:port/db?prefix=..&ttl=..&lock_ttl=..&lock_wait=..`` (shared by
several processes or hosts, which coalesce their misses through its locks).
"""

from __future__ import annotations

from promptcache.store._url import (
    DEFAULT_STORE_URL,
    SCHEMES,
    open_store,
    redact_url,
    sqlite_path,
)
from promptcache.store.base import (
    FlightLock,
    FlightLocks,
    FlightWatch,
    LockUnavailable,
    ResponseStore,
    StoredEntry,
    StoreStats,
)
from promptcache.store.memory import MemoryStore, MemoryStoreConfig

__all__ = [
    "DEFAULT_STORE_URL",
    "SCHEMES",
    "FlightLock",
    "FlightLocks",
    "FlightWatch",
    "LockUnavailable",
    "MemoryStore",
    "MemoryStoreConfig",
    "ResponseStore",
    "StoreStats",
    "StoredEntry",
    "open_store",
    "redact_url",
    "sqlite_path",
]
