"""Eviction policies: which evictable cached block gives up its slot first.

A policy only orders keys (block serial numbers) that the prefix cache tells
it are evictable -- unreferenced and not pinned. The cache adds a key when a
block becomes evictable, discards it when the block is referenced or pinned
again, and pops a victim when it needs a slot. Policies are chosen by name
(``PrefixCacheConfig.eviction``); :func:`make_eviction_policy` lists the valid
names in its error.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import ClassVar


class EvictionPolicy(ABC):
    name: ClassVar[str]

    @abstractmethod
    def add(self, key: int) -> None:
        """``key`` became evictable (or was released again: it is now the most recent)."""

    @abstractmethod
    def discard(self, key: int) -> None:
        """``key`` is no longer evictable (referenced, pinned or gone); unknown keys are ignored."""

    @abstractmethod
    def pop_victim(self) -> int | None:
        """Remove and return the key to evict next, or None when nothing is evictable."""

    @abstractmethod
    def __len__(self) -> int: ...


class LRUPolicy(EvictionPolicy):
    """Least recently released first. The cache releases a prompt's blocks tail first,
    so within one prompt the last block goes before its parents."""

    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def add(self, key: int) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def discard(self, key: int) -> None:
        self._order.pop(key, None)

    def pop_victim(self) -> int | None:
        if not self._order:
            return None
        key, _ = self._order.popitem(last=False)
        return key

    def __len__(self) -> int:
        return len(self._order)


class FIFOPolicy(EvictionPolicy):
    """Oldest stored block first, however often it is hit (serials grow with storage time)."""

    name = "fifo"

    def __init__(self) -> None:
        # A heap with lazy deletion: discarded keys stay in the heap until they
        # surface, and are skipped because they are no longer members.
        self._heap: list[int] = []
        self._members: set[int] = set()

    def add(self, key: int) -> None:
        if key not in self._members:
            self._members.add(key)
            heapq.heappush(self._heap, key)

    def discard(self, key: int) -> None:
        self._members.discard(key)
        if len(self._heap) > 2 * len(self._members) + 64:
            self._heap = sorted(self._members)

    def pop_victim(self) -> int | None:
        while self._heap:
            key = heapq.heappop(self._heap)
            if key in self._members:
                self._members.remove(key)
                return key
        return None

    def __len__(self) -> int:
        return len(self._members)


EVICTION_POLICIES: dict[str, type[EvictionPolicy]] = {
    policy.name: policy for policy in (LRUPolicy, FIFOPolicy)
}


def make_eviction_policy(name: str) -> EvictionPolicy:
    try:
        return EVICTION_POLICIES[name]()
    except KeyError:
        valid = ", ".join(sorted(EVICTION_POLICIES))
        raise ValueError(f"unknown eviction policy {name!r}; valid names: {valid}") from None
