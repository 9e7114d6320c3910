"""A Redis store talking through a ``redis.Redis`` client the caller made.

LangChain's ``RedisCache(redis_)`` takes a client, not a URL. The store keeps
everything it does for a URL (entry format, prefix, outages as misses, buffered
stats) and only swaps in that client; it never closes a client it did not make.
Imported only by ``RedisCache``, so the LangChain adapter alone imports no redis.
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib

from promptcache.store.redis import RedisStore, RedisStoreConfig

_POOL_OWNED = frozenset({"maint_notifications_pool_handler"})
"""Connection arguments a pool makes for itself: not copied into a sibling pool."""


class ClientRedisStore(RedisStore):
    def __init__(self, client: redis_lib.Redis[Any], *, prefix: str) -> None:
        own = _bytes_client(client)
        super().__init__(RedisStoreConfig(url=_display_url(client), prefix=prefix))
        # RedisStore builds its client from config.url (lazily: nothing connected
        # yet); the caller's client replaces it.
        self._client.close()
        self._client = own
        self._owns_client = own is not client

    def close(self) -> None:
        self.flush()
        if self._owns_client:
            self._client.close()


def _bytes_client(client: redis_lib.Redis[Any]) -> redis_lib.Redis[bytes]:
    """``client`` itself if it returns bytes, else one on a sibling pool that does."""
    pool = client.connection_pool
    kwargs: dict[str, Any] = dict(pool.connection_kwargs)
    if not kwargs.get("decode_responses"):
        return client
    kwargs = {k: v for k, v in kwargs.items() if k not in _POOL_OWNED and not k.startswith("orig_")}
    kwargs["decode_responses"] = False
    try:
        sibling = redis_lib.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    except TypeError as exc:  # a redis-py whose pools take other arguments
        raise ValueError(
            "RedisCache needs a redis.Redis client made with decode_responses=False "
            f"(the default), or a redis:// URL ({exc})"
        ) from exc
    return redis_lib.Redis(connection_pool=sibling)


def _display_url(client: redis_lib.Redis[Any]) -> str:
    """Where the client connects, for stats and logs (no credentials)."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, redis_lib.SSLConnection) else "redis"
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{db}"
