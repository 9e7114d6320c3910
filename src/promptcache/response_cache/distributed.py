"""Coalescing across processes: one leader per key for every process on one store.

The in-process :class:`~promptcache.response_cache.flight.FlightTable` stays in
front: of a process's concurrent misses on a key only its local leader gets
here, so a process holds at most one store lock per key. That local leader
either

* takes the key's lock (:meth:`FlightLocks.acquire
  <promptcache.store.base.FlightLocks.acquire>`) and computes -- a
  :class:`RemoteLead` keeps the lock alive (extending it every third of its TTL)
  until the entry is stored, then releases it, which wakes the other processes;
* or follows: it subscribes to the key's releases, and on each release (or every
  poll interval, to notice a leader that died and whose lock expired) reads the
  entry -- found: a hit for it and its local waiters; not found and the lock is
  free: the leader failed or died, and this process leads in its place;
* or, when the lock service does not answer or the wait bound runs out, computes
  with in-process coalescing only. A lock never fails a request.

Counters say which happened (``/metrics``, ``/v1/cache/stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

from promptcache.store.base import FlightLock, FlightLocks, LockUnavailable

logger = logging.getLogger(__name__)

HitT = TypeVar("HitT")
_MAX_POLL = 0.5
"""Seconds between looks at a lock whose release was not announced (a dead leader)."""


@dataclass
class CoalescingCounts:
    """Cross-process coalescing outcomes since start (one per local leader's miss)."""

    leads: int = 0
    """Misses computed holding the key's lock (takeovers included)."""
    follows: int = 0
    """Misses served by the entry another process's leader stored."""
    takeovers: int = 0
    """Leads taken after another process's leader failed or died without an entry."""
    wait_timeouts: int = 0
    """Misses that waited the whole bound (``lock_wait``) and computed without the lock."""
    unavailable: int = 0
    """Misses computed with in-process coalescing only: the lock service did not answer."""
    locks_lost: int = 0
    """Leads whose lock expired or was taken before they finished (extension failed)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RemoteLead:
    """A held store lock, extended in the background until released."""

    def __init__(self, lock: FlightLock, ttl: float, counts: CoalescingCounts) -> None:
        self._lock = lock
        self._counts = counts
        self._released = False
        self._lost_once = False
        self._keeper = asyncio.create_task(self._keep_alive(ttl / 3))

    async def _keep_alive(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self._lock.extend()
            except LockUnavailable:
                continue  # it may answer next time; until then the lock runs down
            if not held:
                self._lost()
                return

    def _lost(self) -> None:
        self._lost_once = True
        self._counts.locks_lost += 1
        logger.warning(
            "promptcache: a cross-process flight lock expired before its leader finished "
            "(an event-loop stall longer than two thirds of lock_ttl?); another process "
            "may compute the same response"
        )

    async def release(self) -> None:
        """Stop extending and release (waking the waiters). Idempotent."""
        if self._released:
            return
        self._released = True
        self._keeper.cancel()
        with contextlib.suppress(LockUnavailable):  # then it expires on its own
            if not await self._lock.release() and not self._lost_once:
                self._lost()  # it ran out between two extensions

    def abandon(self) -> None:
        """:meth:`release` from synchronous code: scheduled, not awaited."""
        if self._released:
            return
        self._keeper.cancel()
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop to release it from: it expires on its own
            return
        detached(self.release())


_detached: set[asyncio.Task[None]] = set()
"""Tasks no caller awaits (the event loop holds tasks only weakly)."""


def detached(work: Coroutine[object, object, None]) -> asyncio.Task[None]:
    """Run ``work`` to its end whatever becomes of the caller."""
    task = asyncio.get_running_loop().create_task(work)
    _detached.add(task)
    task.add_done_callback(_detached.discard)
    return task


class CrossProcessCoalescer(Generic[HitT]):
    """Elects one leader per key across the processes sharing ``locks``."""

    def __init__(self, locks: FlightLocks) -> None:
        self.locks = locks
        self.counts = CoalescingCounts()
        self._poll = min(_MAX_POLL, locks.ttl / 4)

    async def lead_or_follow(
        self, key: str, read: Callable[[], Awaitable[HitT | None]]
    ) -> HitT | RemoteLead | None:
        """Another process's stored result (``read()``'s hit), a :class:`RemoteLead`
        (compute, store, then release it), or None: compute without the lock."""
        try:
            lead = await self._take(key, read)
            if lead is not None:
                return lead
            return await self._follow(key, read)
        except LockUnavailable as exc:
            self.counts.unavailable += 1
            logger.debug("promptcache: no cross-process lock for %s (%s)", key, exc)
            return None

    async def _take(
        self, key: str, read: Callable[[], Awaitable[HitT | None]]
    ) -> HitT | RemoteLead | None:
        """The lock (or, when the entry appeared meanwhile, the entry), or None: held elsewhere."""
        lock = await self.locks.acquire(key)
        if lock is None:
            return None
        lead = RemoteLead(lock, self.locks.ttl, self.counts)
        try:
            # A leader elsewhere may have stored the key and released between our
            # miss and this acquisition: look once more before computing it again.
            hit = await read()
        except BaseException:
            lead.abandon()
            raise
        if hit is not None:
            await lead.release()
            self.counts.follows += 1
            return hit
        self.counts.leads += 1
        return lead

    async def _follow(
        self, key: str, read: Callable[[], Awaitable[HitT | None]]
    ) -> HitT | RemoteLead | None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.locks.wait
        async with self.locks.watch(key) as watch:
            # Subscribed before the first look, so no release after it goes unseen. The
            # entry is read again only when a release is announced: a poll that heard
            # nothing only tries the lock (whose taker re-reads), so waiting does not
            # count a store miss per poll.
            announced = True
            while True:
                if announced:
                    hit = await read()
                    if hit is not None:
                        self.counts.follows += 1
                        return hit
                # Free and no entry: the leader failed or died; lead in its place.
                taken = await self._take(key, read)
                if taken is not None:
                    if isinstance(taken, RemoteLead):
                        self.counts.takeovers += 1
                    return taken
                remaining = give_up - loop.time()
                if remaining <= 0:
                    self.counts.wait_timeouts += 1
                    logger.info(
                        "promptcache: waited %.3g s for another process to compute %s; "
                        "computing it here (lock_wait)",
                        self.locks.wait,
                        key,
                    )
                    return None
                announced = await watch.released(min(remaining, self._poll))


__all__ = ["CoalescingCounts", "CrossProcessCoalescer", "RemoteLead", "detached"]
