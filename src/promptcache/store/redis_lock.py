"""Cross-process flight locks on Redis (the :class:`~promptcache.store.base.FlightLocks`
capability of :class:`~promptcache.store.redis.RedisStore`).

A key's lock is the Redis string ``<prefix>__flight__:<key>``, taken with
redis-py's :class:`redis.asyncio.lock.Lock` (``SET name token NX PX ttl``, a
random token per owner, extension and release by Lua scripts that compare the
token first, so only the owner can extend or release it). Its release script
also ``PUBLISH``-es on a channel of the same name (channels and keys are
separate namespaces), so waiters wake as soon as the leader has stored its
entry; a leader that dies publishes nothing and waiters notice the expiry by
polling.

:class:`LoopClients` holds one asyncio client per event loop (redis-py's
asyncio connections belong to the loop that opened them); the store's own
async reads and writes use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import redis.asyncio as aredis
from redis.asyncio.client import PubSub
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import LockError, RedisError

from promptcache.store.base import FlightLock, FlightLocks, FlightWatch, LockUnavailable

LOCK_INFIX = "__flight__:"
"""Between the store's prefix and the key: lock names never collide with entries."""
DEFAULT_LOCK_TTL = 5.0
DEFAULT_LOCK_WAIT = 60.0


class _AnnouncingLock(Lock):
    """redis-py's lock whose release also announces itself on the lock's own channel."""

    # The parent caches its registered scripts on its own class; None here makes
    # register_scripts register this class's release script rather than inherit that one.
    lua_release = None
    LUA_RELEASE_SCRIPT = """
        local token = redis.call('get', KEYS[1])
        if not token or token ~= ARGV[1] then
            return 0
        end
        redis.call('del', KEYS[1])
        redis.call('publish', KEYS[1], 'released')
        return 1
    """


class RedisFlightLock(FlightLock):
    def __init__(self, lock: Lock) -> None:
        self._lock = lock

    async def extend(self) -> bool:
        try:
            await self._lock.reacquire()  # back to the full TTL, owner checked in Lua
        except LockError:  # not ours any more (LockNotOwnedError), or released here
            return False
        except RedisError as exc:
            raise LockUnavailable(str(exc)) from exc
        return True

    async def release(self) -> bool:
        try:
            await self._lock.release()
        except LockError:  # expired or taken over: nothing of ours to release
            return False
        except RedisError as exc:
            raise LockUnavailable(str(exc)) from exc
        return True


class _RedisWatch(FlightWatch):
    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    async def released(self, timeout: float) -> bool:
        try:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=max(timeout, 0.0)
            )
        except RedisError as exc:
            raise LockUnavailable(str(exc)) from exc
        return message is not None


class LoopClients:
    """One redis-py asyncio client per event loop, all on one URL."""

    def __init__(self, url: str, *, socket_timeout: float) -> None:
        self._url = url
        self.socket_timeout = socket_timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis[bytes]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> aredis.Redis[bytes]:
        """The running loop's client (opened on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = aredis.Redis.from_url(
                self._url,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.socket_timeout,
                # As the sync client: one immediate retry re-dials a dead connection.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=0,
            )
        return client

    async def aclose(self) -> None:
        """Close this event loop's connections (the others close with their loops)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()  # type: ignore[attr-defined]  # types-redis predates it


class RedisFlightLocks(FlightLocks):
    def __init__(
        self,
        clients: LoopClients,
        *,
        prefix: str,
        ttl: float = DEFAULT_LOCK_TTL,
        wait: float = DEFAULT_LOCK_WAIT,
    ) -> None:
        if not ttl > 0 or not wait >= 0:
            raise ValueError(f"lock_ttl must be > 0 and lock_wait >= 0, got {ttl} and {wait}")
        self.ttl = float(ttl)
        self.wait = float(wait)
        self._clients = clients
        self._prefix = prefix

    def name(self, key: str) -> str:
        """The lock's Redis key (and its release channel)."""
        return f"{self._prefix}{LOCK_INFIX}{key}"

    async def acquire(self, key: str) -> RedisFlightLock | None:
        client = self._clients.get()
        lock = _AnnouncingLock(
            client, self.name(key), timeout=self.ttl, blocking=False, thread_local=False
        )
        try:
            taken = await lock.acquire(blocking=False, token=secrets.token_hex(16))
        except RedisError as exc:
            raise LockUnavailable(str(exc)) from exc
        return RedisFlightLock(lock) if taken else None

    def watch(self, key: str) -> AbstractAsyncContextManager[FlightWatch]:
        return self._watch(self.name(key))

    @contextlib.asynccontextmanager
    async def _watch(self, channel: str) -> AsyncIterator[FlightWatch]:
        pubsub = self._clients.get().pubsub()
        try:
            try:
                await pubsub.subscribe(channel)
                # Read the confirmation: only then is a release published after this
                # point sure to reach us, so the caller's look at the entry comes after it.
                confirmed = await pubsub.get_message(timeout=self._clients.socket_timeout)
            except RedisError as exc:
                raise LockUnavailable(str(exc)) from exc
            if confirmed is None:
                raise LockUnavailable(f"no subscription confirmation for {channel}")
            yield _RedisWatch(pubsub)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[attr-defined]  # types-redis predates it

    async def aclose(self) -> None:
        await self._clients.aclose()


__all__ = ["DEFAULT_LOCK_TTL", "DEFAULT_LOCK_WAIT", "LOCK_INFIX", "LoopClients", "RedisFlightLocks"]
