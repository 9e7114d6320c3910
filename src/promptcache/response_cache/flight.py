"""Coalescing: one leader per key computes, every concurrent caller of that key waits.

One I/O-free core and two thin adapters, as httpx keeps one base under its sync
and async clients:

* :class:`FlightTable` -- which keys have a leader, and each flight's shared
  state (the leader's result and a "done" signal). Pure bookkeeping: it never
  waits, stores or locks; the adapters supply the signal type and the locking.
* :class:`Lead` -- what the elected leader holds: :meth:`Lead.publish` shares a
  result with the waiters at once, :meth:`Lead.finish` (async) /
  :meth:`Lead.finish_sync` stores it and releases the flight. A leader that
  finishes without publishing (it failed, or was cancelled) stores nothing and
  wakes the waiters, and the first of them to get there leads in its place, so
  an error is never shared and never stored. A leader that also holds the
  key's cross-process lock (:attr:`Lead.remote`) releases it after storing.
* :func:`await_turn` / :func:`wait_turn` -- the election loop for asyncio and
  for threads: return the leader's result, or a :class:`Lead` for the caller.

Callers normally use :meth:`ResponseCache.lookup_or_lead
<promptcache.response_cache.cache.ResponseCache.lookup_or_lead>`, which puts
the lookup, the election and the re-check in one place.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from promptcache.response_cache.distributed import RemoteLead, detached
from promptcache.result import Result


class _Signal(Protocol):
    def set(self) -> None: ...


SignalT = TypeVar("SignalT", bound=_Signal)


@dataclass(eq=False)
class FlightState(Generic[SignalT]):
    done: SignalT
    result: Result | None = None


class FlightTable(Generic[SignalT]):
    """Leaders by key (see the module docstring). Not thread-safe on its own."""

    def __init__(self, new_signal: Callable[[], SignalT]) -> None:
        self._new_signal = new_signal
        self._flights: dict[str, FlightState[SignalT]] = {}

    def elect(self, key: str) -> tuple[FlightState[SignalT], bool]:
        """The key's flight, and whether the caller just became its leader."""
        state = self._flights.get(key)
        if state is not None:
            return state, False
        state = self._flights[key] = FlightState(self._new_signal())
        return state, True

    def end(self, key: str, state: FlightState[SignalT]) -> None:
        """Release ``state``'s flight and wake its waiters."""
        if self._flights.get(key) is state:
            del self._flights[key]
        state.done.set()


class Lead:
    """The leader's side of one flight: publish once, then finish."""

    def __init__(
        self,
        key: str,
        state: FlightState[asyncio.Event] | FlightState[threading.Event],
        *,
        write: bool,
        release: Callable[[], None],
        store: Callable[[str, Result], object],
        astore: Callable[[str, Result], object] | None = None,
    ) -> None:
        self.key = key
        self._state = state
        self._write = write
        self._release = release
        self._store = store
        self._astore = astore
        self._to_store: Result | None = None
        self._finished = False
        self._settling: asyncio.Task[None] | None = None
        self.remote: RemoteLead | None = None
        """The key's cross-process lock, when this leader holds it (asyncio path)."""

    @property
    def published(self) -> Result | None:
        return self._state.result

    def publish(self, result: Result, *, write: bool | None = None) -> None:
        """Share ``result`` with the waiters now; it is stored when the lead finishes.

        Publish only a complete, successful result; ``write`` overrides the
        flight's own for this result.
        """
        if self._finished:
            raise RuntimeError(f"flight {self.key} has finished; it cannot publish")
        if self._state.result is not None:
            raise RuntimeError(f"flight {self.key} already published a result")
        self._state.result = result
        self._state.done.set()  # waiters are served now, while the leader finishes up
        if self._write if write is None else write:
            self._to_store = result

    async def finish(self) -> None:
        """Store the published result (if any) and release the flight. Idempotent.

        Shielded: a caller cancelled meanwhile (a streaming client that hung up
        after its last frame) does not cut it short, for a flight released before
        its store completes would send the waiters -- here and in other
        processes -- to a missing entry, and they would compute it again.
        """
        if self._finished:
            return
        if self._settling is None:
            self._settling = detached(self._settle())
        await asyncio.shield(self._settling)

    async def _settle(self) -> None:
        try:
            # Stored before the flight is released, so a request arriving
            # meanwhile either joins this flight or finds the entry.
            if self._to_store is not None and self._astore is not None:
                awaitable = self._astore(self.key, self._to_store)
                if asyncio.iscoroutine(awaitable):
                    await awaitable
            if self.remote is not None:
                # After the store: the other processes' waiters wake to read the entry.
                await self.remote.release()
        finally:
            self.abandon()

    def finish_sync(self) -> None:
        """:meth:`finish` for threads."""
        if self._finished:
            return
        try:
            if self._to_store is not None:
                self._store(self.key, self._to_store)
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Release the flight without storing anything (a failed or cancelled leader)."""
        if not self._finished:
            self._finished = True
            if self.remote is not None:
                self.remote.abandon()
            self._release()


async def await_turn(
    table: FlightTable[asyncio.Event], key: str
) -> tuple[FlightState[asyncio.Event], bool]:
    """Wait for ``key``'s flight: (state with the leader's result, False), or (a new
    flight's state, True) when the caller leads -- also after a leader left empty-handed."""
    while True:
        state, leader = table.elect(key)
        if leader:
            return state, True
        await state.done.wait()
        if state.result is not None:
            return state, False


def wait_turn(
    table: FlightTable[threading.Event], key: str, lock: threading.Lock
) -> tuple[FlightState[threading.Event], bool]:
    """:func:`await_turn` for threads; ``lock`` guards ``table``."""
    while True:
        with lock:
            state, leader = table.elect(key)
        if leader:
            return state, True
        state.done.wait()
        if state.result is not None:
            return state, False
