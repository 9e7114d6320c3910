"""SQLite store: one file, WAL, TTL, byte budget with LRU eviction, several processes.

Why it is fast yet safe:

* WAL with ``synchronous=NORMAL``: a commit appends to the WAL without an
  fsync (only checkpoints sync). The database can never be corrupted by a
  crash; at worst the last commits before a *power loss* are lost, which a
  cache tolerates. A killed process loses nothing it committed.
* One connection per thread, opened once, with sqlite3's statement cache:
  no per-call connection setup or SQL parsing.
* Each ``put`` is one row in one ``BEGIN IMMEDIATE`` transaction, so an entry
  is either wholly there or absent, even after SIGKILL; totals are kept by
  triggers in that same transaction, so the budget check is O(1) and exact
  across processes.
* Lookups never write. Last-access times (for LRU) are recorded only when
  the stored one is older than ``touch_interval``, and hit/miss counters are
  buffered; both are flushed in one transaction every ``flush_every`` lookups
  or ``flush_interval`` seconds (and on ``stats``/``close``). LRU order is
  therefore approximate to ``touch_interval``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from promptcache.errors import StoreError
from promptcache.store._sqlite_schema import check_file_header, migrate
from promptcache.store._url import redact_url
from promptcache.store.base import (
    ResponseStore,
    StoredEntry,
    StoreStats,
    validate_limit,
    validate_ttl,
)

logger = logging.getLogger(__name__)

_GET = "SELECT value, created_at, accessed_at, expires_at FROM entries WHERE key = ?"
_PUT = """
INSERT INTO entries (key, value, size, created_at, accessed_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    value = excluded.value, size = excluded.size, created_at = excluded.created_at,
    accessed_at = excluded.accessed_at, expires_at = excluded.expires_at
"""
_TOTALS = (
    "SELECT (SELECT value FROM counters WHERE name = 'entries'),"
    " (SELECT value FROM counters WHERE name = 'bytes')"
)
_ADD = "UPDATE counters SET value = value + ? WHERE name = ?"
# Expired rows are purged every this many puts of one process (besides when over budget).
_PURGE_EVERY_PUTS = 512


@dataclass(frozen=True, kw_only=True)
class SqliteStoreConfig:
    path: Path
    max_bytes: int | None = 1024 * 1024 * 1024
    max_entries: int | None = None
    ttl: float | None = None
    busy_timeout: float = 10.0
    """Seconds a write waits for another process's write before failing."""
    touch_interval: float = 60.0
    flush_every: int = 1000
    flush_interval: float = 5.0
    create: bool = True
    """If False, a missing file is an error instead of a new empty store."""

    def __post_init__(self) -> None:
        if str(self.path) in ("", ":memory:"):
            raise ValueError(
                "A SQLite store needs a file path (each thread has its own connection); "
                "use memory:// for an in-process store"
            )
        validate_limit(self.max_bytes, name="max_bytes")
        validate_limit(self.max_entries, name="max_entries")
        validate_ttl(self.ttl)
        validate_ttl(self.busy_timeout, name="busy_timeout")
        if self.touch_interval < 0 or self.flush_interval < 0:
            raise ValueError("touch_interval and flush_interval must be >= 0 seconds")
        validate_limit(self.flush_every, name="flush_every")


class SqliteStore(ResponseStore):
    def __init__(self, config: SqliteStoreConfig, *, url: str | None = None) -> None:
        self.config = config
        self.path = Path(config.path)
        self.url = redact_url(url or f"sqlite:///{self.path}")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._pending_touches: dict[str, float] = {}
        self._pending_hits = 0
        self._pending_misses = 0
        self._pending_ops = 0
        self._last_flush = time.monotonic()
        self._puts_since_purge = 0
        self._open()

    def _open(self) -> None:
        if not self.path.exists():
            if not self.config.create:
                raise StoreError(
                    f"No response cache at {self.path}. Fix: check the path, or run "
                    "`promptcache serve` (or any write) to create it."
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        check_file_header(self.path)
        migrate(self._connection(), self.path)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError(f"The response cache {self.path} is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.config.busy_timeout,
                isolation_level=None,  # explicit BEGIN IMMEDIATE ... COMMIT below
                check_same_thread=False,  # only so close() may close it from any thread
                cached_statements=64,
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"Cannot open the response cache {self.path}: {exc}. Fix: check that the "
                "file and its directory are writable, or use another store path."
            ) from exc
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    # -- reads -----------------------------------------------------------------

    def get(self, key: str) -> StoredEntry | None:
        row = self._connection().execute(_GET, (key,)).fetchone()
        now = time.time()
        hit = row is not None and (row[3] is None or row[3] > now)
        with self._lock:
            self._pending_ops += 1
            if hit:
                self._pending_hits += 1
                if now - row[2] >= self.config.touch_interval:
                    self._pending_touches[key] = now
            else:
                self._pending_misses += 1
            due = self._pending_ops >= self.config.flush_every or (
                time.monotonic() - self._last_flush >= self.config.flush_interval
            )
        if due:
            self.flush()
        return StoredEntry(row[0], row[1]) if hit else None

    def flush(self) -> None:
        """Write buffered access times and hit/miss counts (advisory: dropped on error)."""
        with self._lock:
            touches, hits, misses = self._pending_touches, self._pending_hits, self._pending_misses
            self._pending_touches, self._pending_hits, self._pending_misses = {}, 0, 0
            self._pending_ops = 0
            self._last_flush = time.monotonic()
        if not (touches or hits or misses):
            return
        try:
            with _write(self._connection()) as conn:
                conn.executemany(
                    "UPDATE entries SET accessed_at = max(accessed_at, ?) WHERE key = ?",
                    [(at, key) for key, at in touches.items()],
                )
                conn.executemany(_ADD, [(hits, "hits"), (misses, "misses")])
        except sqlite3.Error as exc:
            logger.warning("promptcache: could not record cache access times in %s: %s", self, exc)

    # -- writes ----------------------------------------------------------------

    def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        ttl = validate_ttl(ttl) if ttl is not None else self.config.ttl
        size = len(key.encode("utf-8")) + len(value)
        max_bytes, max_entries = self.config.max_bytes, self.config.max_entries
        if max_bytes is not None and size > max_bytes:
            logger.debug("promptcache: entry of %d bytes exceeds max_bytes; not stored", size)
            return
        now = time.time()
        expires_at = None if ttl is None else now + ttl
        with self._lock:
            self._puts_since_purge += 1
            purge = self._puts_since_purge >= _PURGE_EVERY_PUTS
            if purge:
                self._puts_since_purge = 0
        with _write(self._connection()) as conn:
            conn.execute(_PUT, (key, value, size, now, now, expires_at))
            if purge:
                _purge_expired(conn, now)
            if max_bytes is not None or max_entries is not None:
                entries, total = conn.execute(_TOTALS).fetchone()
                if (max_entries is not None and entries > max_entries) or (
                    max_bytes is not None and total > max_bytes
                ):
                    self._evict(conn, now, key, entries, total)

    def _evict(
        self, conn: sqlite3.Connection, now: float, keep: str, entries: int, total: int
    ) -> None:
        """Drop expired rows, then least-recently-accessed ones, until within budget."""
        entries, total = (
            conn.execute(_TOTALS).fetchone()
            if _purge_expired(conn, now)
            else (
                entries,
                total,
            )
        )
        max_bytes, max_entries = self.config.max_bytes, self.config.max_entries
        excess_bytes = total - max_bytes if max_bytes is not None else 0
        excess_entries = entries - max_entries if max_entries is not None else 0
        victims: list[str] = []
        for victim, size in conn.execute(
            "SELECT key, size FROM entries ORDER BY accessed_at, rowid"
        ):
            if excess_bytes <= 0 and excess_entries <= 0:
                break
            if victim == keep:
                continue
            victims.append(victim)
            excess_bytes -= size
            excess_entries -= 1
        conn.executemany("DELETE FROM entries WHERE key = ?", [(v,) for v in victims])
        conn.execute(_ADD, (len(victims), "evictions"))

    def delete(self, key: str) -> bool:
        with _write(self._connection()) as conn:
            return conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount > 0

    def clear(self) -> int:
        with _write(self._connection()) as conn:
            return conn.execute("DELETE FROM entries").rowcount

    # -- bookkeeping -----------------------------------------------------------

    def stats(self) -> StoreStats:
        self.flush()
        conn = self._connection()
        with _write(conn):  # a consistent snapshot of totals, minus expired rows
            _purge_expired(conn, time.time())
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return StoreStats(
            url=self.url,
            entries=counters["entries"],
            bytes=counters["bytes"],
            hits=counters["hits"],
            misses=counters["misses"],
            evictions=counters["evictions"],
        )

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" or SQLite's description of the damage."""
        rows = self._connection().execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            with self._lock:
                connections, self._connections = self._connections, []
            for conn in connections:
                conn.close()
            self._local = threading.local()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"


def _purge_expired(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute(
        "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
    ).rowcount


class _write:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
