"""Pins from explicit breakpoints (and ``prompt_cache_retention: "24h"``): which blocks
may not be evicted, and until when; and holds, which pin a block with no expiry of
their own (named prefixes: ``prefix/named.py`` ends them when their TTL runs out).

:func:`check_pin_ttls` and :func:`aligned_pins` read the ``(position, ttl)``
pins a commit is given; :class:`PinTable` keeps the pinned blocks.

Expiry is lazy: a min-heap of (expiry, serial) is swept whenever the cache
needs an up-to-date view. Refreshing a pin pushes a new entry and leaves the
old one behind; stale entries are skipped when they surface and the heap is
rebuilt when they outnumber the live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from promptcache.prefix.block import CachedBlock
from promptcache.request import PIN_TTL_SECONDS, PinTTL

Pins = tuple[tuple[int, PinTTL], ...]


def check_pin_ttls(pins: Sequence[tuple[int, PinTTL]]) -> None:
    for _, ttl in pins:
        if ttl not in PIN_TTL_SECONDS:
            raise ValueError(f"unknown cache TTL {ttl!r}; valid: {', '.join(PIN_TTL_SECONDS)}")


def aligned_pins(pins: Sequence[tuple[int, PinTTL]], *, num_full: int, block_size: int) -> Pins:
    """``pins`` with each position clamped to the ``num_full`` full blocks and block-aligned."""
    limit = num_full * block_size
    return tuple((min(max(0, pos), limit) // block_size * block_size, ttl) for pos, ttl in pins)


class PinTable:
    def __init__(self) -> None:
        self._pinned: dict[int, CachedBlock] = {}
        self._expiry: list[tuple[float, int]] = []
        self._holds: dict[int, int] = {}
        """Serial -> how many holds pin the block (named prefixes may share blocks)."""

    def __len__(self) -> int:
        """Blocks pinned by a TTL, a hold, or both (each counted once: the cap's unit)."""
        return len(self._pinned) + sum(1 for serial in self._holds if serial not in self._pinned)

    def __contains__(self, block: CachedBlock) -> bool:
        return block.serial in self._pinned or block.serial in self._holds

    def count_unpinned(self, blocks: Iterable[CachedBlock]) -> int:
        return sum(1 for block in blocks if block not in self)

    def hold(self, block: CachedBlock) -> None:
        self._holds[block.serial] = self._holds.get(block.serial, 0) + 1

    def release_hold(self, block: CachedBlock) -> bool:
        """Drop one hold; whether the block is no longer pinned at all."""
        count = self._holds.get(block.serial, 0)
        if count > 1:
            self._holds[block.serial] = count - 1
        else:
            self._holds.pop(block.serial, None)
        return block not in self

    def pin(self, block: CachedBlock, now: float, ttl_seconds: float) -> None:
        """Pin until ``max(current expiry, now + ttl)``: a shorter pin never cuts a longer one."""
        block.pin_ttl = max(block.pin_ttl, ttl_seconds)
        until = max(block.pinned_until, now + ttl_seconds)
        if until != block.pinned_until or block.serial not in self._pinned:
            block.pinned_until = until
            heapq.heappush(self._expiry, (until, block.serial))
        self._pinned[block.serial] = block

    def refresh(self, block: CachedBlock, now: float) -> None:
        """A hit on a pinned block extends its pin by its own TTL."""
        if block.serial in self._pinned:
            self.pin(block, now, block.pin_ttl)

    def discard(self, block: CachedBlock) -> None:
        self._pinned.pop(block.serial, None)
        self._holds.pop(block.serial, None)

    def expire(self, now: float) -> list[CachedBlock]:
        """Unpin and return the blocks whose pin ended at or before ``now``."""
        expired: list[CachedBlock] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, serial = heapq.heappop(self._expiry)
            block = self._pinned.get(serial)
            if block is None or block.pinned_until > now:
                continue  # unpinned already, or refreshed (a newer entry is queued)
            del self._pinned[serial]
            block.pin_ttl = 0.0
            if serial not in self._holds:  # a held block stays pinned by its hold
                expired.append(block)
        if len(self._expiry) > 2 * len(self._pinned) + 64:
            self._expiry = [(block.pinned_until, s) for s, block in self._pinned.items()]
            heapq.heapify(self._expiry)
        return expired
