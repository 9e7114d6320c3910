"""The prefix-cache interface, and the values it hands out.

Every prefix cache serves one request in the same steps: :meth:`~BasePrefixCache.match`
the prompt (a :class:`PrefixMatch` handle), :meth:`~BasePrefixCache.gather` the
matched KV into the request's buffer, :meth:`~BasePrefixCache.commit` the new
blocks once the prompt is computed, and :meth:`~BasePrefixCache.release` the
handle (always, in ``finally``). :class:`~promptcache.prefix.cache.PrefixCache`
is the real one; :class:`~promptcache.prefix.disabled.DisabledPrefixCache`
serves the same steps when caching is off, so callers never check a flag.

The handle hides the cache's bookkeeping: it carries what callers read
(``num_tokens``, ``num_blocks``) and an opaque key under which the cache that
issued it keeps its own record (references, claims, whether it committed).
"""

from __future__ import annotations

import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NewType, TypeAlias

import torch

from promptcache.prefix.config import PrefixCacheConfig
from promptcache.prefix.pool import KVLayout
from promptcache.request import PinTTL
from promptcache.result import PrefixCacheSnapshot

MatchKey = NewType("MatchKey", int)
"""Names one match to the cache that issued it; unique in the process, meaningless elsewhere."""

_match_keys = itertools.count(1)


def new_match_key() -> MatchKey:
    return MatchKey(next(_match_keys))


MissCause: TypeAlias = Literal["evicted", "expired", "tenant", "cold", "changed", "below_minimum"]


@dataclass(frozen=True, eq=False, kw_only=True)
class PrefixMatch:
    """The cached prefix of one request: a handle, never shared between requests.

    ``num_tokens`` cached tokens (a multiple of the block size, 0 on a miss) in
    ``num_blocks`` blocks. Pass the handle back to ``gather``, ``commit`` and
    ``release`` of the cache that issued it.
    """

    num_tokens: int
    num_blocks: int
    key: MatchKey = field(repr=False)
    """Opaque: only the issuing cache reads it."""
    miss: MissCause | None = None
    """Why the prompt's full blocks were not all read (None when they were): the block
    after the longest cached prefix was ``evicted``, its pin ``expired`` and it was then
    evicted, it is another ``tenant``'s (block 0 cached under another salt), it was never
    seen (``cold``, also when the prompt diverges inside block 0), the prompt ``changed``
    after a cached prefix, or the prompt or its matched prefix is ``below_minimum``."""
    diverged_block: int = 0
    """The index of the first full block not found (the longest cached prefix, in blocks)."""


@dataclass(frozen=True, kw_only=True)
class CommitReport:
    """What ``commit`` did. Positions are block-aligned token counts from the prompt start."""

    tokens_written: int = 0
    """Tokens newly stored (blocks already cached are not counted)."""
    tokens_not_stored: int = 0
    """Full-block tokens that should have been stored but did not fit the budget."""
    pinned: tuple[tuple[int, PinTTL], ...] = ()
    pins_refused: tuple[tuple[int, PinTTL], ...] = ()
    """Pins not applied because they would exceed ``max_pinned_fraction`` of the budget."""
    pins_uncached: tuple[tuple[int, PinTTL], ...] = ()
    """Pins not applied because their prefix is not cached: shorter than
    ``min_cache_tokens`` (or than one block), or not stored for lack of budget."""
    blocks_evicted: int = 0


@dataclass(frozen=True, eq=False, kw_only=True)
class PrefixHold:
    """Full blocks of one prefix pinned with no expiry of their own (a named prefix) until
    :meth:`~BasePrefixCache.release_hold`; counted against the pinned cap."""

    num_tokens: int
    num_blocks: int
    key: MatchKey = field(repr=False)


class PinCapError(ValueError):
    """Pinning would take the pinned blocks past ``max_pinned_fraction`` of the budget."""

    def __init__(self, *, needed_blocks: int, pinned_blocks: int, max_pinned_blocks: int) -> None:
        super().__init__(
            f"pinning needs {needed_blocks} more blocks; {pinned_blocks} of at most "
            f"{max_pinned_blocks} are pinned"
        )
        self.needed_blocks = needed_blocks
        self.pinned_blocks = pinned_blocks
        self.max_pinned_blocks = max_pinned_blocks


class PrefixNotCachedError(LookupError):
    """The prefix to hold is not (all) cached: ``cached_tokens`` of ``num_tokens`` are."""

    def __init__(self, *, cached_tokens: int, num_tokens: int) -> None:
        super().__init__(f"{cached_tokens} of the prefix's {num_tokens} full-block tokens cached")
        self.cached_tokens = cached_tokens
        self.num_tokens = num_tokens


class BasePrefixCache(ABC):
    """Cached KV prefixes of one model (``model_id``), shared by every request and tenant.

    Thread-safe: ``match`` runs on request threads, ``gather`` and ``commit``
    on the model's compute thread.
    """

    def __init__(self, config: PrefixCacheConfig, layout: KVLayout, *, model_id: str) -> None:
        self.config = config
        self.layout = layout
        self.model_id = model_id
        self.block_bytes = config.block_size * layout.bytes_per_token

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def min_cache_tokens(self) -> int:
        return self.config.min_cache_tokens

    @property
    @abstractmethod
    def blocks_in_use(self) -> int:
        """Cached blocks some request references right now (0 when every request released)."""

    @property
    @abstractmethod
    def claims_in_flight(self) -> int:
        """Blocks some request has claimed to compute and not yet committed or released."""

    @property
    @abstractmethod
    def requests_waiting(self) -> int:
        """Requests sleeping until blocks another request is computing are committed."""

    @abstractmethod
    def match(
        self,
        token_ids: Sequence[int],
        *,
        salt: str,
        cancel: threading.Event | None = None,
    ) -> PrefixMatch:
        """Reference the longest cached prefix of ``token_ids`` for tenant ``salt``."""

    @abstractmethod
    def gather(self, match: PrefixMatch, out: torch.Tensor) -> None:
        """Copy the matched KV into ``out[:, :, :, :match.num_tokens, :]``."""

    @abstractmethod
    def commit(
        self,
        match: PrefixMatch,
        token_ids: Sequence[int],
        kv: torch.Tensor,
        *,
        pins: Sequence[tuple[int, PinTTL]] = (),
    ) -> CommitReport:
        """Store the full blocks of ``token_ids`` from ``kv`` (once per match), pinning ``pins``."""

    @abstractmethod
    def release(self, match: PrefixMatch) -> None:
        """Drop what the match holds. Idempotent; call it in ``finally``."""

    def hold(self, token_ids: Sequence[int], *, salt: str) -> PrefixHold:
        """Pin the full blocks of ``token_ids`` (tenant ``salt``) until released: raises
        :class:`PrefixNotCachedError` unless all are cached, :class:`PinCapError` when the
        pinned cap has no room. Holds are not refreshed by hits and do not expire."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold prefixes")

    def release_hold(self, hold: PrefixHold) -> None:
        """End ``hold`` (idempotent): its blocks are evictable again unless pinned otherwise."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold prefixes")

    @abstractmethod
    def clear(self) -> None:
        """Drop every cached block no request holds."""

    @abstractmethod
    def stats(self) -> PrefixCacheSnapshot: ...
