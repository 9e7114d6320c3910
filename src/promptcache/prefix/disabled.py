"""The prefix cache when caching is off: every match misses and nothing is stored.

It keeps the protocol's checks (a released match cannot be gathered or
committed, a match commits once) so that code written against it also runs
against :class:`~promptcache.prefix.cache.PrefixCache`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from promptcache.prefix.base import (
    BasePrefixCache,
    CommitReport,
    MatchKey,
    PrefixMatch,
    new_match_key,
)
from promptcache.prefix.config import PrefixCacheConfig
from promptcache.prefix.pins import aligned_pins, check_pin_ttls
from promptcache.prefix.pool import KVLayout
from promptcache.request import PinTTL
from promptcache.result import PrefixCacheSnapshot


class DisabledPrefixCache(BasePrefixCache):
    """No storage, no claims, no waiting; ``stats`` stay zero."""

    def __init__(self, config: PrefixCacheConfig, layout: KVLayout, *, model_id: str) -> None:
        super().__init__(config, layout, model_id=model_id)
        self._lock = threading.Lock()
        self._committed: dict[MatchKey, bool] = {}
        """Open matches, and whether each has committed."""

    @property
    def blocks_in_use(self) -> int:
        return 0

    @property
    def claims_in_flight(self) -> int:
        return 0

    @property
    def requests_waiting(self) -> int:
        return 0

    def match(
        self,
        token_ids: Sequence[int],
        *,
        salt: str,
        cancel: threading.Event | None = None,
    ) -> PrefixMatch:
        handle = PrefixMatch(num_tokens=0, num_blocks=0, key=new_match_key())
        with self._lock:
            self._committed[handle.key] = False
        return handle

    def gather(self, match: PrefixMatch, out: torch.Tensor) -> None:
        with self._lock:
            if match.key not in self._committed:
                raise RuntimeError("gather() on a released PrefixMatch")

    def commit(
        self,
        match: PrefixMatch,
        token_ids: Sequence[int],
        kv: torch.Tensor,
        *,
        pins: Sequence[tuple[int, PinTTL]] = (),
    ) -> CommitReport:
        with self._lock:
            committed = self._committed.get(match.key)
            if committed is None:
                raise RuntimeError("commit() on a released PrefixMatch")
            if committed:
                raise RuntimeError("commit() called twice on one PrefixMatch")
            self._committed[match.key] = True
        check_pin_ttls(pins)
        num_full = len(token_ids) // self.block_size
        return CommitReport(
            pins_uncached=aligned_pins(pins, num_full=num_full, block_size=self.block_size)
        )

    def release(self, match: PrefixMatch) -> None:
        with self._lock:
            self._committed.pop(match.key, None)

    def clear(self) -> None:
        pass

    def stats(self) -> PrefixCacheSnapshot:
        return PrefixCacheSnapshot()
