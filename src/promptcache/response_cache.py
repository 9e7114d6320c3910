"""The exact response cache: :class:`~promptcache.request.Result` objects by key, coalesced.

:class:`ResponseCache` sits on any :class:`~promptcache.store.ResponseStore`
and adds three things the stores don't know about:

* results in and out (``Result.to_json``/``from_json``), with ``max_age``;
* **coalescing**: concurrent identical misses compute once. ``flight(key)``
  (asyncio) and ``flight_sync(key)`` (threads) elect one leader per key;
  the others wait and are served the leader's published result. A leader
  that fails or is cancelled publishes nothing and one waiter takes over, so
  an error is never shared and never stored;
* resilience: a store that fails is logged and treated as a miss (reads) or
  skipped (writes). A cache must never fail the request it is caching;
  :attr:`ResponseCache.store_available` says whether the last store call
  worked, for health checks and metrics (a degraded server still serves).

The flight shape lets the HTTP server stream live to the leader's client
while identical concurrent requests wait and then replay the result::

    async with cache.flight(key) as flight:
        if flight.result is not None:
            return replay(flight.result)       # served by the leader
        result = await stream_to_client(...)   # we are the leader
        flight.publish(result)                 # waiters are served now; stored on exit
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypeAlias

from promptcache.request import Result
from promptcache.store.base import ResponseStore, StoredEntry, validate_ttl

logger = logging.getLogger(__name__)

CacheStatus: TypeAlias = Literal["HIT", "MISS", "BYPASS"]
"""``HIT``: served without computing; ``MISS``: computed; ``BYPASS``: not looked up."""


@dataclass(frozen=True, slots=True)
class CacheHit:
    result: Result
    age: float
    """Seconds since the entry was stored (0 for a result shared by a concurrent leader)."""


class ResponseCache:
    def __init__(self, store: ResponseStore, *, ttl: float | None = None) -> None:
        self.store = store
        self.ttl = validate_ttl(ttl)
        # Per event loop: asyncio primitives must not cross loops.
        self._async_flights: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, _AsyncFlightState]
        ] = weakref.WeakKeyDictionary()
        self._thread_flights: dict[str, _ThreadFlightState] = {}
        self._thread_lock = threading.Lock()
        self._flights_finished = 0
        self.store_available = True
        """Whether the store's last call succeeded (False: serving without the cache)."""
        self.store_failures = 0
        """Store calls that failed since start."""

    @property
    def flights_finished(self) -> int:
        """How many led flights have ended. Read it before a miss's lookup: if it is
        unchanged once you lead a flight, no leader can have stored the key since
        that lookup, so looking it up again would only repeat the miss."""
        return self._flights_finished

    def _count_finished_flight(self) -> None:
        with self._thread_lock:  # flights of several threads and event loops end here
            self._flights_finished += 1

    # -- plain reads and writes ------------------------------------------------

    def get(self, key: str, *, max_age: float | None = None) -> CacheHit | None:
        try:
            entry = self.store.get(key)
        except Exception as exc:
            self._store_failed("read", key, exc)
            return None
        self.store_available = True
        return self._decode(key, entry, max_age)

    def put(self, key: str, result: Result) -> None:
        try:
            self.store.put(key, result.to_json().encode("utf-8"), ttl=self.ttl)
        except Exception as exc:
            self._store_failed("write", key, exc)
        else:
            self.store_available = True

    async def aget(self, key: str, *, max_age: float | None = None) -> CacheHit | None:
        try:
            entry = await self.store.aget(key)
        except Exception as exc:
            self._store_failed("read", key, exc)
            return None
        self.store_available = True
        return self._decode(key, entry, max_age)

    async def aput(self, key: str, result: Result) -> None:
        try:
            await self.store.aput(key, result.to_json().encode("utf-8"), ttl=self.ttl)
        except Exception as exc:
            self._store_failed("write", key, exc)
        else:
            self.store_available = True

    def _store_failed(self, what: str, key: str, exc: Exception) -> None:
        self.store_available = False
        self.store_failures += 1
        _log_store_failure(what, key, exc)

    def _decode(
        self, key: str, entry: StoredEntry | None, max_age: float | None
    ) -> CacheHit | None:
        if entry is None:
            return None
        age = max(0.0, time.time() - entry.created_at)
        if max_age is not None and age > max_age:
            return None
        try:
            result = Result.from_json(entry.value)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("promptcache: dropping unreadable cache entry %s: %s", key, exc)
            try:
                self.store.delete(key)
            except Exception as delete_exc:
                _log_store_failure("delete", key, delete_exc)
            return None
        return CacheHit(result=result, age=age)

    # -- coalescing ------------------------------------------------------------

    def flight(self, key: str, *, write: bool = True) -> AsyncFlight:
        """``async with cache.flight(key) as f``: lead the computation of ``key`` or wait for it.

        ``write=False``: the published result is shared with waiters but not stored.
        """
        return AsyncFlight(self, key, write=write)

    def flight_sync(self, key: str, *, write: bool = True) -> ThreadFlight:
        """The thread equivalent of :meth:`flight`: ``with cache.flight_sync(key) as f``."""
        return ThreadFlight(self, key, write=write)

    def _loop_flights(self) -> dict[str, _AsyncFlightState]:
        loop = asyncio.get_running_loop()
        flights = self._async_flights.get(loop)
        if flights is None:
            flights = self._async_flights[loop] = {}
        return flights

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[Result]],
        *,
        read: bool = True,
        write: bool = True,
        max_age: float | None = None,
    ) -> tuple[Result, CacheStatus, float]:
        """The cached result, or ``await compute()`` once for all concurrent callers.

        Returns ``(result, status, age_seconds)``. ``read=False`` (``no-cache``)
        always computes (``BYPASS``); ``write=False`` (``no-store``) never stores.
        """
        if not read:
            result = await compute()
            if write:
                await self.aput(key, result)
            return result, "BYPASS", 0.0
        seen = self.flights_finished
        hit = await self.aget(key, max_age=max_age)
        if hit is not None:
            return hit.result, "HIT", hit.age
        async with self.flight(key, write=write) as flight:
            if flight.result is not None:
                return flight.result, "HIT", 0.0
            # A leader may have stored the result between our miss and our election.
            hit = None if seen == self.flights_finished else await self.aget(key, max_age=max_age)
            if hit is not None:
                flight.publish(hit.result, write=False)
                return hit.result, "HIT", hit.age
            result = await compute()
            flight.publish(result)
            return result, "MISS", 0.0

    def get_or_compute_sync(
        self,
        key: str,
        compute: Callable[[], Result],
        *,
        read: bool = True,
        write: bool = True,
        max_age: float | None = None,
    ) -> tuple[Result, CacheStatus, float]:
        """:meth:`get_or_compute` for threads: concurrent threads compute once."""
        if not read:
            result = compute()
            if write:
                self.put(key, result)
            return result, "BYPASS", 0.0
        seen = self.flights_finished
        hit = self.get(key, max_age=max_age)
        if hit is not None:
            return hit.result, "HIT", hit.age
        with self.flight_sync(key, write=write) as flight:
            if flight.result is not None:
                return flight.result, "HIT", 0.0
            hit = None if seen == self.flights_finished else self.get(key, max_age=max_age)
            if hit is not None:
                flight.publish(hit.result, write=False)
                return hit.result, "HIT", hit.age
            result = compute()
            flight.publish(result)
            return result, "MISS", 0.0


class _AsyncFlightState:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.result: Result | None = None


class _ThreadFlightState:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Result | None = None


_FlightState: TypeAlias = "_AsyncFlightState | _ThreadFlightState"


class _Flight:
    """What leader and waiters share; see :meth:`ResponseCache.flight`."""

    def __init__(self, cache: ResponseCache, key: str, *, write: bool) -> None:
        self.key = key
        self.result: Result | None = None
        """The leader's result when this caller waited; None when this caller must compute."""
        self.is_leader = False
        self._cache = cache
        self._write = write
        self._to_store: Result | None = None

    def _accept(self, state: _FlightState | None, result: Result, write: bool | None) -> None:
        if not self.is_leader or state is None:
            raise RuntimeError("only the flight's leader (flight.result is None) may publish")
        if state.result is not None:
            raise RuntimeError(f"flight {self.key} already published a result")
        state.result = result
        state.done.set()  # waiters are served now, while the leader finishes up
        if self._write if write is None else write:
            self._to_store = result


class AsyncFlight(_Flight):
    _state: _AsyncFlightState | None = None

    def publish(self, result: Result, *, write: bool | None = None) -> None:
        """Share ``result`` with the waiters now; store it when the flight exits.

        Publish only a complete, successful result. ``write`` overrides the
        flight's ``write`` for this result.
        """
        self._accept(self._state, result, write)

    async def __aenter__(self) -> AsyncFlight:
        flights = self._cache._loop_flights()
        while True:
            state = flights.get(self.key)
            if state is None:
                self._state = flights[self.key] = _AsyncFlightState()
                self.is_leader = True
                return self
            await state.done.wait()
            if state.result is not None:
                self.result = state.result
                return self
            # The leader left without a result: the first waiter to get here leads.

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state = self._state
        if not self.is_leader or state is None:
            return
        try:
            if self._to_store is not None:
                # Stored before the flight is released, so a request arriving
                # meanwhile either joins this flight or finds the entry.
                await self._cache.aput(self.key, self._to_store)
        finally:
            flights = self._cache._loop_flights()
            if flights.get(self.key) is state:
                del flights[self.key]
            self._cache._count_finished_flight()
            state.done.set()


class ThreadFlight(_Flight):
    _state: _ThreadFlightState | None = None

    def publish(self, result: Result, *, write: bool | None = None) -> None:
        """As :meth:`AsyncFlight.publish`, for threads."""
        self._accept(self._state, result, write)

    def __enter__(self) -> ThreadFlight:
        flights, lock = self._cache._thread_flights, self._cache._thread_lock
        while True:
            with lock:
                state = flights.get(self.key)
                if state is None:
                    self._state = flights[self.key] = _ThreadFlightState()
                    self.is_leader = True
                    return self
            state.done.wait()
            if state.result is not None:
                self.result = state.result
                return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        state = self._state
        if not self.is_leader or state is None:
            return
        try:
            if self._to_store is not None:
                self._cache.put(self.key, self._to_store)
        finally:
            with self._cache._thread_lock:
                if self._cache._thread_flights.get(self.key) is state:
                    del self._cache._thread_flights[self.key]
            self._cache._count_finished_flight()
            state.done.set()


def _log_store_failure(what: str, key: str, exc: Exception) -> None:
    logger.warning(
        "promptcache: response cache %s failed for %s (%s: %s); continuing without the cache",
        what,
        key,
        type(exc).__name__,
        exc,
    )


__all__ = [
    "AsyncFlight",
    "CacheHit",
    "CacheStatus",
    "ResponseCache",
    "ThreadFlight",
]
