"""In-flight sharing: blocks a request is computing right now, and the requests waiting for them.

``match`` claims the blocks its request is about to compute. A second request
whose next block is claimed waits on the cache's condition variable until the
owner commits or releases, then matches again -- so N concurrent identical
prefixes are computed once. Every method runs with that condition's lock held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from promptcache.prefix.base import MatchKey
from promptcache.prefix.hashing import BlockHash

# How often a waiter re-checks its cancel event: threading.Event cannot wake a Condition.
_CANCEL_POLL_SECONDS = 0.05

_Block = TypeVar("_Block")


class InflightClaims:
    """Which match claimed each block hash, and how many requests wait on claims."""

    def __init__(self, cond: threading.Condition, *, wait_seconds: float) -> None:
        self._cond = cond
        self._wait_seconds = wait_seconds
        self._owners: dict[BlockHash, MatchKey] = {}
        self.waiting = 0

    def __len__(self) -> int:
        return len(self._owners)

    def claim(self, owner: MatchKey, hashes: Iterable[BlockHash]) -> set[BlockHash]:
        """Claim for ``owner`` those of ``hashes`` nobody claimed yet; returns them."""
        claimed: set[BlockHash] = set()
        for block_hash in hashes:
            if block_hash not in self._owners:
                self._owners[block_hash] = owner
                claimed.add(block_hash)
        return claimed

    def release(self, owner: MatchKey, hashes: set[BlockHash]) -> None:
        """Drop ``owner``'s claims on ``hashes`` (emptying the set) and wake the waiters."""
        if not hashes:
            return
        for block_hash in hashes:
            if self._owners.get(block_hash) == owner:
                del self._owners[block_hash]
        hashes.clear()
        self._cond.notify_all()

    def wait_for_chain(
        self,
        hashes: Sequence[BlockHash],
        confirmed_chain: Callable[[], list[_Block]],
        *,
        min_tokens: int,
        block_size: int,
        cancel: threading.Event | None,
    ) -> list[_Block]:
        """The confirmed cached chain, after waiting out claims on the block right after it.

        Waits at most ``wait_seconds`` in all, never once ``cancel`` is set, and
        only while the claimed run after the chain would reach ``min_tokens``.
        """
        deadline: float | None = None
        while True:
            chain = confirmed_chain()
            if len(chain) == len(hashes):
                return chain
            if cancel is not None and cancel.is_set():
                return chain
            if self._claimed_reach(hashes, len(chain)) * block_size < max(min_tokens, 1):
                return chain  # nothing claimed next, or too little to make a usable hit
            # Wall time, not the cache's injectable clock: this bounds a real wait.
            if deadline is None:
                deadline = time.monotonic() + self._wait_seconds
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return chain
            if cancel is not None:
                remaining = min(remaining, _CANCEL_POLL_SECONDS)
            self.waiting += 1
            try:
                self._cond.wait(remaining)
            finally:
                self.waiting -= 1

    def _claimed_reach(self, hashes: Sequence[BlockHash], start: int) -> int:
        """How many leading blocks would be cached once the claims from ``start`` on land."""
        reach = start
        while reach < len(hashes) and hashes[reach] in self._owners:
            reach += 1
        return reach if reach > start else 0
