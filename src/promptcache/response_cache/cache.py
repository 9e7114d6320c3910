"""The exact response cache: :class:`~promptcache.result.Result` objects by key, coalesced.

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
  worked, for health checks and metrics (a degraded server still serves);
* across processes: when the store offers :meth:`flight_locks
  <promptcache.store.base.ResponseStore.flight_locks>` (Redis), a local leader
  of the asyncio path also takes the key's lock, so every process on the store
  computes a key once (:mod:`promptcache.response_cache.distributed`). Misses
  that will not be stored (``write=False``) and the thread path coalesce within
  their process only.

The lead shape lets the HTTP server stream live to the leader's client
while identical concurrent requests wait and then replay the result::

    outcome = await cache.lookup_or_lead(key)
    if isinstance(outcome, CacheHit):
        return replay(outcome.result)          # stored, or served by a leader
    try:
        result = await stream_to_client(...)   # we are the leader
        outcome.publish(result)                # waiters are served now
    finally:
        await outcome.finish()                 # stored, flight released
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType

from promptcache.response_cache.distributed import CoalescingCounts, CrossProcessCoalescer
from promptcache.response_cache.flight import (
    FlightState,
    FlightTable,
    Lead,
    await_turn,
    wait_turn,
)
from promptcache.result import Result
from promptcache.store.base import ResponseStore, StoredEntry, validate_ttl

logger = logging.getLogger(__name__)


class CacheStatus(StrEnum):
    """How the response cache served a request (the ``x-promptcache`` header's value)."""

    HIT = "HIT"
    """Served without computing: a stored entry, or a concurrent leader's result."""
    MISS = "MISS"
    """Looked up, not found, computed."""
    BYPASS = "BYPASS"
    """Not looked up (``no-cache``, an uncacheable request, or no cache)."""


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
            asyncio.AbstractEventLoop, FlightTable[asyncio.Event]
        ] = weakref.WeakKeyDictionary()
        self._thread_flights: FlightTable[threading.Event] = FlightTable(threading.Event)
        self._thread_lock = threading.Lock()
        self._flights_finished = 0
        self.store_available = True
        """Whether the store's last call succeeded (False: serving without the cache)."""
        self.store_failures = 0
        """Store calls that failed since start."""
        locks = store.flight_locks()
        self._coalescer: CrossProcessCoalescer[CacheHit] | None = (
            None if locks is None else CrossProcessCoalescer(locks)
        )

    @property
    def coalescing(self) -> CoalescingCounts | None:
        """Cross-process coalescing counts; None when the store cannot lock."""
        return None if self._coalescer is None else self._coalescer.counts

    def coalescing_counts(self) -> dict[str, int] | None:
        """:attr:`coalescing` as plain numbers by outcome (``/metrics``, stats)."""
        counts = self.coalescing
        return None if counts is None else counts.as_dict()

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

    async def lookup_or_lead(
        self, key: str, *, max_age: float | None = None, write: bool = True
    ) -> CacheHit | Lead:
        """The entry for ``key``, or a concurrent leader's result (a :class:`CacheHit`
        of age 0), or -- when nobody has it -- a :class:`Lead`: compute, ``publish``,
        and ``await lead.finish()`` in every case (a ``finally``).

        ``write=False`` (``no-store``): the published result is shared, not stored.
        """
        seen = self._flights_finished
        hit = await self.aget(key, max_age=max_age)
        if hit is not None:
            return hit
        table = self._loop_flights()
        state, leader = await await_turn(table, key)
        if not leader:
            assert state.result is not None
            return CacheHit(result=state.result, age=0.0)
        lead = self._lead(table, key, state, write=write)
        try:
            # A leader may have stored the key between our miss and our election;
            # if no flight ended since that miss, none can have, and the re-read
            # would only repeat it.
            hit = None if seen == self._flights_finished else await self.aget(key, max_age=max_age)
            if hit is None and write and self._coalescer is not None:
                # An entry that will not be stored cannot be shared through the store.
                elected = await self._coalescer.lead_or_follow(
                    key, lambda: self.aget(key, max_age=max_age)
                )
                if isinstance(elected, CacheHit):
                    hit = elected
                else:
                    lead.remote = elected
        except BaseException:
            lead.abandon()
            raise
        return lead if hit is None else _served_by(lead, hit)

    def lookup_or_lead_sync(
        self, key: str, *, max_age: float | None = None, write: bool = True
    ) -> CacheHit | Lead:
        """:meth:`lookup_or_lead` for threads (finish with ``lead.finish_sync()``)."""
        seen = self._flights_finished
        hit = self.get(key, max_age=max_age)
        if hit is not None:
            return hit
        table = self._thread_flights
        state, leader = wait_turn(table, key, self._thread_lock)
        if not leader:
            assert state.result is not None
            return CacheHit(result=state.result, age=0.0)
        lead = self._lead(table, key, state, write=write)
        try:
            hit = None if seen == self._flights_finished else self.get(key, max_age=max_age)
        except BaseException:
            lead.abandon()
            raise
        return lead if hit is None else _served_by(lead, hit)

    def _lead(
        self,
        table: FlightTable[asyncio.Event] | FlightTable[threading.Event],
        key: str,
        state: FlightState[asyncio.Event] | FlightState[threading.Event],
        *,
        write: bool,
    ) -> Lead:
        """The leader's handle on ``state``: releasing it ends the flight in ``table``."""

        def release() -> None:
            self._end_flight(lambda: table.end(key, state))  # type: ignore[arg-type]

        return Lead(key, state, write=write, release=release, store=self.put, astore=self.aput)

    def _end_flight(self, end: Callable[[], None]) -> None:
        # Counted before the waiters wake: one that leads next must see that a
        # flight ended since its miss, and look again. One lock for every
        # thread's and event loop's flights (it also guards the thread table).
        with self._thread_lock:
            self._flights_finished += 1
            end()

    def flight(self, key: str, *, write: bool = True) -> AsyncFlight:
        """``async with cache.flight(key) as f``: lead the computation of ``key`` or wait
        for it, without the store lookup (:meth:`lookup_or_lead` does both)."""
        return AsyncFlight(self, key, write=write)

    def _loop_flights(self) -> FlightTable[asyncio.Event]:
        loop = asyncio.get_running_loop()
        table = self._async_flights.get(loop)
        if table is None:
            table = self._async_flights[loop] = FlightTable(asyncio.Event)
        return table

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
            return result, CacheStatus.BYPASS, 0.0
        outcome = await self.lookup_or_lead(key, max_age=max_age, write=write)
        if isinstance(outcome, CacheHit):
            return outcome.result, CacheStatus.HIT, outcome.age
        try:
            result = await compute()
            outcome.publish(result)
        finally:
            await outcome.finish()
        return result, CacheStatus.MISS, 0.0

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
            return result, CacheStatus.BYPASS, 0.0
        outcome = self.lookup_or_lead_sync(key, max_age=max_age, write=write)
        if isinstance(outcome, CacheHit):
            return outcome.result, CacheStatus.HIT, outcome.age
        try:
            result = compute()
            outcome.publish(result)
        finally:
            outcome.finish_sync()
        return result, CacheStatus.MISS, 0.0


class AsyncFlight:
    """``async with cache.flight(key)``: :attr:`result` is a leader's result when this
    caller waited; None when this caller leads and must :meth:`publish`."""

    def __init__(self, cache: ResponseCache, key: str, *, write: bool) -> None:
        self.key = key
        self.result: Result | None = None
        self.is_leader = False
        self._cache = cache
        self._write = write
        self._lead: Lead | None = None

    def publish(self, result: Result, *, write: bool | None = None) -> None:
        if self._lead is None:
            raise RuntimeError("only the flight's leader (flight.result is None) may publish")
        self._lead.publish(result, write=write)

    async def __aenter__(self) -> AsyncFlight:
        cache = self._cache
        table = cache._loop_flights()
        state, leader = await await_turn(table, self.key)
        if not leader:
            self.result = state.result
            return self
        self.is_leader = True
        self._lead = cache._lead(table, self.key, state, write=self._write)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lead is not None:
            await self._lead.finish()


def _served_by(lead: Lead, hit: CacheHit) -> CacheHit:
    """A leader that found the entry after all: share it with any waiters, release."""
    lead.publish(hit.result, write=False)
    lead.abandon()
    return hit


def _log_store_failure(what: str, key: str, exc: Exception) -> None:
    logger.warning(
        "promptcache: response cache %s failed for %s (%s: %s); continuing without the cache",
        what,
        key,
        type(exc).__name__,
        exc,
    )


__all__ = ["AsyncFlight", "CacheHit", "CacheStatus", "ResponseCache"]
