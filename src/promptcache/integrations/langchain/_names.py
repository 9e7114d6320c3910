"""LangChain's own cache classes (InMemoryCache, SQLiteCache, RedisCache), ours underneath.

Each takes the arguments of the LangChain class of that name, in the same way
(``langchain_core.caches.InMemoryCache(*, maxsize=None)``,
``langchain_community.cache.SQLiteCache(database_path=".langchain.db")``,
``langchain_community.cache.RedisCache(redis_, *, ttl=None)``), so LangChain code
switches to promptcache by changing one import::

    from langchain_core.globals import set_llm_cache
    from promptcache.integrations.langchain import SQLiteCache  # was langchain_community.cache

    set_llm_cache(SQLiteCache(database_path=".langchain-promptcache.db"))

On top of LangChain's arguments, all keyword-only: ``ttl=`` (seconds an entry
lives; LangChain's ``RedisCache`` has it, the others do not), ``max_bytes=``
(memory and SQLite: a byte cap, least recently used entries evicted first) and
``namespace=`` (several caches in one store). ``lookup``/``update``/``clear``
and their async twins are :class:`PromptCacheLangChainCache`'s: values are
stored as ``langchain_core.load.dumps`` writes them and read back equal.

No coalescing: LangChain's cache protocol is lookup, model call, update, with no
hook in between, so concurrent identical misses each call the model -- as with
LangChain's own classes. (promptcache's server coalesces; its response cache
does for direct callers.)
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from langchain_core.caches import BaseCache
from langchain_core.load import loads
from langchain_core.outputs import Generation

from promptcache._extras import require
from promptcache.errors import StoreError
from promptcache.integrations.langchain._cache import PromptCacheLangChainCache
from promptcache.store import MemoryStore, MemoryStoreConfig, ResponseStore, open_store
from promptcache.store.sqlite import SqliteStore, SqliteStoreConfig

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

LANGCHAIN_SQLITE_TABLE = "full_llm_cache"
"""The table ``langchain_community.cache.SQLiteCache`` keeps its entries in."""
DEFAULT_REDIS_PREFIX = "promptcache-langchain:"
"""Key prefix of :class:`RedisCache`'s entries (outside a server store's ``promptcache:``)."""
_SQLITE_HEADER = b"SQLite format 3\x00"


class InMemoryCache(PromptCacheLangChainCache):
    """``langchain_core.caches.InMemoryCache`` over promptcache's in-process store.

    ``maxsize`` bounds the number of entries as LangChain's does: once a write
    would go over it, the oldest entry is removed. Where it differs:

    * "oldest" is least recently *used* (our memory store is an LRU): a hit
      refreshes an entry, and writing a key again makes it the newest.
      LangChain's evicts in first-written order, ignoring lookups and re-writes.
      With no lookups or re-writes in between, both evict the same entries.
    * At capacity, writing a key that is already there evicts nothing
      (LangChain's drops its oldest entry even then).
    * Entries are stored serialised, as ``dumps`` writes them: a lookup returns
      equal copies, not the very objects passed to ``update``, and a generation
      that cannot be serialised is not cached (LangChain's keeps any object).
    * ``max_bytes`` (default 256 MiB, the memory store's) also caps the stored
      bytes, evicting the same way; ``max_bytes=None`` lifts it.
    """

    def __init__(
        self,
        *,
        maxsize: int | None = None,
        ttl: float | None = None,
        max_bytes: int | None = MemoryStoreConfig.max_bytes,
        namespace: str = "",
    ) -> None:
        if maxsize is not None and maxsize <= 0:
            raise ValueError("maxsize must be greater than 0")  # LangChain's message
        store = MemoryStore(MemoryStoreConfig(max_entries=maxsize, max_bytes=max_bytes))
        super().__init__(store, namespace=namespace, ttl=ttl)
        self.maxsize = maxsize


class SQLiteCache(PromptCacheLangChainCache):
    """``langchain_community.cache.SQLiteCache`` over promptcache's SQLite store.

    One file shared by several processes (WAL), entries read back across restarts.
    Our schema is not LangChain's: a file LangChain's ``SQLiteCache`` wrote (it
    holds a ``full_llm_cache`` table) is refused with a :class:`~promptcache.errors.StoreError`
    and left untouched -- pass another ``database_path``, and copy its entries over
    with :func:`import_langchain_sqlite` to keep them. ``":memory:"`` is an
    in-process cache, as it is for LangChain (which keeps one per thread).

    Beyond LangChain's: ``ttl=``, and ``max_bytes=`` (default 1 GiB, the SQLite
    store's; least recently used entries are evicted first; ``None`` lifts it).
    """

    def __init__(
        self,
        database_path: str | os.PathLike[str] = ".langchain.db",
        *,
        ttl: float | None = None,
        max_bytes: int | None = SqliteStoreConfig.max_bytes,
        namespace: str = "",
    ) -> None:
        path = os.fspath(database_path)
        store: ResponseStore
        if path == ":memory:":
            store = MemoryStore(MemoryStoreConfig(max_entries=None, max_bytes=max_bytes))
        else:
            refuse_langchain_file(Path(path))
            store = SqliteStore(SqliteStoreConfig(path=Path(path), max_bytes=max_bytes))
        super().__init__(store, namespace=namespace, ttl=ttl)
        self.database_path = path


class RedisCache(PromptCacheLangChainCache):
    """``langchain_community.cache.RedisCache`` over promptcache's Redis store.

    ``redis_`` is a ``redis.Redis`` client, as for LangChain: the cache talks
    through that client's connection pool (host, credentials, TLS, timeouts are
    the client's). A client made with ``decode_responses=True`` gets a sibling
    pool with the same settings that returns bytes, since entries are binary.
    A ``redis://`` / ``rediss://`` URL is accepted too (its query configures the
    store as for any store URL). ``ttl`` is LangChain's: seconds each entry lives.

    Where it differs: entries live under ``prefix`` (default
    ``promptcache-langchain:``; a URL's own ``?prefix=`` takes precedence), and
    ``clear()`` removes those keys only -- LangChain's runs ``FLUSHDB``, emptying
    the whole database. Redis being down is a miss and a dropped write with a
    warning, as LangChain's logs an error and carries on. No ``max_bytes``:
    Redis's own ``maxmemory`` policy bounds it.
    """

    def __init__(
        self,
        redis_: redis.Redis[Any] | str,
        *,
        ttl: float | None = None,
        prefix: str = DEFAULT_REDIS_PREFIX,
        namespace: str = "",
    ) -> None:
        redis_lib = require("redis", "redis")  # the redis extra, named when missing
        store: ResponseStore
        if isinstance(redis_, str):
            store = open_store(_with_prefix(redis_, prefix))
        elif isinstance(redis_, redis_lib.Redis):
            from promptcache.integrations.langchain._redis import ClientRedisStore

            store = ClientRedisStore(redis_, prefix=prefix)
        else:
            raise ValueError("Please pass a valid `redis.Redis` client (or a redis:// URL).")
        super().__init__(store, namespace=namespace, ttl=ttl)


def _with_prefix(url: str, prefix: str) -> str:
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise ValueError(
            "RedisCache takes a redis.Redis client or a redis:// (rediss://) URL, "
            f"not {parts.scheme or url!r}"
        )
    if "prefix" in dict(parse_qsl(parts.query, keep_blank_values=True)):
        return url
    query = "&".join(q for q in (parts.query, urlencode({"prefix": prefix})) if q)
    return urlunsplit(parts._replace(query=query))


# -- LangChain's SQLite files ---------------------------------------------------------


def is_langchain_sqlite(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a SQLite file holding LangChain's ``full_llm_cache`` table.

    Read-only: the file is opened with ``mode=ro`` and never written.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            if handle.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                return False
    except OSError:  # missing or unreadable: the store says what is wrong, if anything
        return False
    try:
        conn = _read_only(path)
    except sqlite3.Error:
        return False
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (LANGCHAIN_SQLITE_TABLE,),
        ).fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return row is not None


def refuse_langchain_file(path: Path) -> None:
    """Raise :class:`StoreError` if ``path`` is a LangChain ``SQLiteCache`` file."""
    if is_langchain_sqlite(path):
        raise StoreError(
            f"{path} is a LangChain SQLiteCache database (it holds LangChain's "
            f"{LANGCHAIN_SQLITE_TABLE!r} table); promptcache's SQLiteCache keeps its entries "
            "in a different schema and will not write into it. Fix: pass another "
            'database_path, e.g. SQLiteCache(database_path=".langchain-promptcache.db"); to '
            "keep what LangChain cached, copy it over with "
            f"promptcache.integrations.langchain.import_langchain_sqlite({str(path)!r}, cache)."
        )


def import_langchain_sqlite(database_path: str | os.PathLike[str], cache: BaseCache) -> int:
    """Copy every entry of a LangChain ``SQLiteCache`` file into ``cache``; returns how many.

    The file is only read (``mode=ro``). Entries LangChain itself could not read
    back (older formats) are skipped with a warning.
    """
    path = Path(database_path)
    if not is_langchain_sqlite(path):
        raise StoreError(f"{path} is not a LangChain SQLiteCache database")
    conn = _read_only(path)
    try:
        rows = conn.execute(
            f"SELECT prompt, llm, response FROM {LANGCHAIN_SQLITE_TABLE} ORDER BY prompt, llm, idx"
        ).fetchall()
    finally:
        conn.close()
    copied = 0
    for (prompt, llm_string), group in itertools.groupby(rows, key=lambda row: row[:2]):
        try:
            generations = [loads(response, allowed_objects="core") for *_, response in group]
            if not all(isinstance(g, Generation) for g in generations):
                raise ValueError("not a list of generations")
        except Exception as exc:
            logger.warning("promptcache: skipping an unreadable LangChain cache entry: %s", exc)
            continue
        cache.update(prompt, llm_string, generations)
        copied += 1
    return copied


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "LANGCHAIN_SQLITE_TABLE",
    "InMemoryCache",
    "RedisCache",
    "SQLiteCache",
    "import_langchain_sqlite",
    "is_langchain_sqlite",
    "refuse_langchain_file",
]
