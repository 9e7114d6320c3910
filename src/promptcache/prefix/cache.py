"""The prefix (context) KV cache: which token prefixes have stored KV, and sharing it safely.

One :class:`PrefixCache` per loaded model. A request calls :meth:`~PrefixCache.match`
with its prompt tokens and gets a :class:`~promptcache.prefix.base.PrefixMatch`
-- the longest cached, block-aligned prefix, referenced so it cannot be evicted
-- then :meth:`~PrefixCache.gather` copies that KV into its own buffer, the
engine computes the rest, :meth:`~PrefixCache.commit` stores the new full
blocks, and :meth:`~PrefixCache.release` (always, in ``finally``) drops the
references. The handle carries only what callers read; what the cache holds
for it (references, claims, commit state) stays here, under its key.

The blocks form trees (:mod:`~promptcache.prefix.tree`: confirmation by parent
and token ids, eviction of descendants, lazy eviction, pins); every hit
refreshes a pinned block's TTL. ``match`` also claims the blocks its request
is about to compute, and a second request wanting them waits until they land
(:mod:`~promptcache.prefix.inflight`), so N concurrent identical prefixes are
computed once.

Thread-safe: one lock guards all bookkeeping; KV copies of blocks a caller
holds (gather, the body of commit) run outside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from promptcache.prefix import hashing
from promptcache.prefix.base import (
    BasePrefixCache,
    CommitReport,
    MatchKey,
    PrefixHold,
    PrefixMatch,
    PrefixNotCachedError,
    new_match_key,
)
from promptcache.prefix.block import CachedBlock
from promptcache.prefix.config import PrefixCacheConfig
from promptcache.prefix.disk import DiskTier
from promptcache.prefix.disk.tiering import Promoter, SpillingTree, open_disk_tier
from promptcache.prefix.hashing import BlockHash
from promptcache.prefix.inflight import InflightClaims
from promptcache.prefix.pins import aligned_pins, check_pin_ttls
from promptcache.prefix.pool import KVBlockPool, KVLayout
from promptcache.prefix.stats import LookupCounters, snapshot
from promptcache.prefix.storing import BlockStore
from promptcache.request import PinTTL
from promptcache.result import PrefixCacheSnapshot

WARM_CHUNKS = 2
"""Pool chunks (32 MB each) kept made and faulted in past the newest, on an idle thread
(``chunk_warmer.py``): a 1,400-token prompt's KV of SmolLM2 fills two."""

__all__ = [
    "CommitReport",
    "KVLayout",
    "PrefixCache",
    "PrefixCacheConfig",
    "PrefixMatch",
]


@dataclass(eq=False, kw_only=True)
class _Held:
    """What the cache keeps for one open match (from ``match`` until ``release``)."""

    root: BlockHash
    hashes: tuple[BlockHash, ...]
    """Every full block of the prompt."""
    blocks: tuple[CachedBlock, ...] = ()
    """The matched chain, referenced."""
    claims: set[BlockHash] = field(default_factory=set)
    committed: bool = False


class PrefixCache(BasePrefixCache):
    """Cached KV blocks of one model, shared by every request and tenant (salted apart).

    ``model_id`` names the weights (part of every block hash: another model
    never hits); ``clock`` measures pin TTLs (inject a fake one in tests).
    Storage is allocated lazily, in chunks, up to ``config.kv_cache_bytes``
    (none when ``config.enabled`` is false; the engine then uses
    :class:`~promptcache.prefix.disabled.DisabledPrefixCache` instead).

    With ``config.disk_path`` a disk tier (:mod:`promptcache.prefix.disk`) lies
    under the RAM tier: new and evicted blocks are written there, and a match
    running past the RAM blocks promotes the stored ones that continue it.
    ``fingerprint`` adds what the engine knows of the model (tokenizer, chat
    template, RoPE) to what the cache knows (model id, layout, dtype, block
    size): blocks stored under another fingerprint are discarded on start.
    """

    def __init__(
        self,
        config: PrefixCacheConfig,
        layout: KVLayout,
        *,
        model_id: str,
        clock: Callable[[], float] = time.monotonic,
        fingerprint: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(config, layout, model_id=model_id)
        self._clock = clock
        num_blocks = config.kv_cache_bytes // self.block_bytes if config.enabled else 0
        self._pool = KVBlockPool(
            layout, block_size=config.block_size, num_blocks=num_blocks, warm_ahead=WARM_CHUNKS
        )
        self._disk = (
            open_disk_tier(config, layout, model_id=model_id, extra=fingerprint)
            if config.disk_enabled
            else None
        )
        self._tree = SpillingTree(
            self._pool,
            disk=self._disk,
            eviction=config.eviction,
            max_pinned_blocks=int(config.max_pinned_fraction * num_blocks),
            min_cache_tokens=config.min_cache_tokens,
        )
        self._cond = threading.Condition(threading.Lock())
        self._claims = InflightClaims(self._cond, wait_seconds=config.inflight_wait_seconds)
        self._held: dict[MatchKey, _Held] = {}
        self._holds: dict[MatchKey, tuple[CachedBlock, ...]] = {}
        self._lookups = LookupCounters()
        self._blocks = BlockStore(
            tree=self._tree, pool=self._pool, lock=self._cond, clock=clock, disk=self._disk
        )
        self._promoter = (
            Promoter(
                tree=self._tree,
                pool=self._pool,
                disk=self._disk,
                claims=self._claims,
                min_tokens=config.min_cache_tokens,
            )
            if self._disk is not None
            else None
        )

    @property
    def blocks_in_use(self) -> int:
        with self._cond:
            return self._tree.count_referenced()

    @property
    def claims_in_flight(self) -> int:
        with self._cond:
            return len(self._claims)

    @property
    def requests_waiting(self) -> int:
        with self._cond:
            return self._claims.waiting

    # -- match -------------------------------------------------------------

    def match(
        self,
        token_ids: Sequence[int],
        *,
        salt: str,
        cancel: threading.Event | None = None,
    ) -> PrefixMatch:
        """Reference the longest cached prefix of ``token_ids`` and claim the blocks after it.

        Waits (at most ``inflight_wait_seconds``, and never once ``cancel`` is
        set) while the next block is being computed by another request. A
        cancelled wait returns what is cached so far and claims nothing; the
        caller should check ``cancel`` and ``release``. A match shorter than
        ``min_cache_tokens`` is returned as 0 tokens. When every prompt token
        is cached the engine still needs logits for the last one: recompute it
        over the gathered KV (its KV is rewritten with the same values).
        """
        tokens = tuple(token_ids)
        root = hashing.root_hash(self.model_id, salt)
        key = new_match_key()
        size = self.block_size
        if len(tokens) // size * size < max(self.min_cache_tokens, 1):
            with self._cond:
                self._held[key] = _Held(root=root, hashes=())
                self._lookups.record(queried=len(tokens))
            return PrefixMatch(num_tokens=0, num_blocks=0, key=key, miss="below_minimum")
        hashes = tuple(hashing.hash_prompt_blocks(tokens, block_size=size, root=root))
        with self._cond:
            chain = self._claims.wait_for_chain(
                hashes,
                lambda: self._tree.confirmed_chain(hashes, tokens, root),
                min_tokens=self.min_cache_tokens,
                block_size=size,
                cancel=cancel,
            )
            promotion = None
            if self._promoter is not None and (cancel is None or not cancel.is_set()):
                promotion = self._promoter.plan(key, hashes, tokens, root, chain)
            if promotion is None:
                return self._referenced_match(key, tokens, hashes, root, chain, cancel)
        from_ram = len(chain)
        chain = promotion.run(self._cond, hashes, tokens, root)  # reads outside the lock
        with self._cond:
            self._lookups.promoted += promotion.promoted
            try:
                return self._referenced_match(
                    key, tokens, hashes, root, chain, cancel, from_ram=from_ram
                )
            finally:
                promotion.unreference()

    def _referenced_match(
        self,
        key: MatchKey,
        tokens: tuple[int, ...],
        hashes: tuple[BlockHash, ...],
        root: BlockHash,
        chain: list[CachedBlock],
        cancel: threading.Event | None,
        *,
        from_ram: int | None = None,
    ) -> PrefixMatch:
        """Reference ``chain`` (the cached prefix; its first ``from_ram`` blocks were in RAM
        before, the rest just promoted from disk) for ``key`` and claim what follows it
        (the lock is held)."""
        size = self.block_size
        now = self._clock()
        self._tree.expire_pins(now)
        first_missing = len(chain)
        miss = self._tree.miss_cause(hashes, tokens, root, chain)
        if len(chain) * size < self.min_cache_tokens:
            if chain:
                miss = "below_minimum"
            chain = []
        for block in chain:
            self._tree.reference(block)
            self._tree.refresh_pin(block, now)
        if self._disk is not None:
            self._disk.touch(block.hash for block in chain)
        held = _Held(root=root, hashes=hashes, blocks=tuple(chain))
        if cancel is None or not cancel.is_set():
            held.claims = self._claims.claim(key, hashes[first_missing:])
        self._held[key] = held
        ram = len(chain) if from_ram is None else min(from_ram, len(chain))
        self._lookups.record(
            queried=len(tokens), hit=len(chain) * size, ram=ram, disk=len(chain) - ram
        )
        return PrefixMatch(
            num_tokens=len(chain) * size,
            num_blocks=len(chain),
            key=key,
            miss=miss,
            diverged_block=first_missing,
        )

    # -- gather ------------------------------------------------------------

    def gather(self, match: PrefixMatch, out: torch.Tensor) -> None:
        """Copy the matched KV into ``out[:, :, :, :match.num_tokens, :]``."""
        with self._cond:
            held = self._held.get(match.key)
            if held is None:
                raise RuntimeError("gather() on a released PrefixMatch")
            slots = [block.slot for block in held.blocks]
        if match.num_tokens == 0:
            return
        self.layout.check(out, min_tokens=match.num_tokens, name="out")
        # Outside the lock: the match references these blocks, so their slots
        # cannot be evicted or rewritten while we copy.
        self._pool.read(slots, out, start=0)

    # -- commit ------------------------------------------------------------

    def commit(
        self,
        match: PrefixMatch,
        token_ids: Sequence[int],
        kv: torch.Tensor,
        *,
        pins: Sequence[tuple[int, PinTTL]] = (),
    ) -> CommitReport:
        """Store the full blocks of ``token_ids`` not cached yet, from ``kv[..., pos, :]``.

        ``token_ids`` must start with the prompt given to ``match`` (it may go
        on, e.g. with generated tokens whose KV is in ``kv``). ``pins`` are
        ``(token_position, ttl)`` breakpoints: the blocks up to
        ``position // block_size`` are pinned for the TTL, unless that would
        exceed the pinned cap. Releases this match's claims and wakes waiters;
        the references stay until :meth:`release`.
        """
        with self._cond:
            held = self._held.get(match.key)
            if held is None:
                raise RuntimeError("commit() on a released PrefixMatch")
            if held.committed:
                raise RuntimeError("commit() called twice on one PrefixMatch")
            held.committed = True
        try:
            return self._commit(held, tuple(token_ids), kv, pins)
        finally:
            with self._cond:
                self._claims.release(match.key, held.claims)

    def _commit(
        self,
        held: _Held,
        tokens: tuple[int, ...],
        kv: torch.Tensor,
        pins: Sequence[tuple[int, PinTTL]],
    ) -> CommitReport:
        check_pin_ttls(pins)
        size = self.block_size
        num_full = len(tokens) // size
        if num_full * size < max(self.min_cache_tokens, 1):
            return CommitReport(
                pins_uncached=aligned_pins(pins, num_full=num_full, block_size=size)
            )
        hashes = hashing.hash_prompt_blocks(tokens, block_size=size, root=held.root)
        matched = len(held.blocks)
        if tuple(hashes[:matched]) != held.hashes[:matched]:
            raise ValueError("commit() token_ids do not start with the matched prompt")
        self.layout.check(kv, min_tokens=num_full * size, name="kv")

        return self._blocks.store(
            root=held.root, hashes=hashes, tokens=tokens, kv=kv, pins=pins, matched=matched
        )

    # -- holds (named prefixes) ----------------------------------------------

    def hold(self, token_ids: Sequence[int], *, salt: str) -> PrefixHold:
        """Pin the cached full blocks of ``token_ids`` until :meth:`release_hold`."""
        tokens = tuple(token_ids)
        root = hashing.root_hash(self.model_id, salt)
        hashes = hashing.hash_prompt_blocks(tokens, block_size=self.block_size, root=root)
        with self._cond:
            self._tree.expire_pins(self._clock())
            chain = self._tree.confirmed_chain(hashes, tokens, root)
            if not chain or len(chain) < len(hashes):
                raise PrefixNotCachedError(
                    cached_tokens=len(chain) * self.block_size,
                    num_tokens=len(hashes) * self.block_size,
                )
            self._tree.hold(chain)  # PinCapError when the cap has no room
            key = new_match_key()
            self._holds[key] = tuple(chain)
        return PrefixHold(num_tokens=len(chain) * self.block_size, num_blocks=len(chain), key=key)

    def release_hold(self, hold: PrefixHold) -> None:
        with self._cond:
            blocks = self._holds.pop(hold.key, None)
            if blocks is not None:
                self._tree.release_hold(blocks)

    # -- release / clear / stats ------------------------------------------

    def release(self, match: PrefixMatch) -> None:
        """Drop the match's references and claims. Idempotent; call it in ``finally``."""
        with self._cond:
            held = self._held.pop(match.key, None)
            if held is None:
                return
            self._tree.unreference(list(held.blocks))
            self._claims.release(match.key, held.claims)

    def clear(self) -> None:
        """Drop every unreferenced block, pinned or not (blocks in use stay), and every
        block of the disk tier."""
        with self._cond:
            self._tree.clear()
        if self._disk is not None:
            self._disk.clear()

    @property
    def disk(self) -> DiskTier | None:
        """The disk tier under the RAM tier, when there is one."""
        return self._disk

    def close(self) -> None:
        """Finish the disk tier's queued writes and let its directory go (no-op without)."""
        if self._disk is not None:
            self._disk.close()

    def stats(self) -> PrefixCacheSnapshot:
        with self._cond:
            self._tree.expire_pins(self._clock())
            return snapshot(
                self._lookups,
                self._tree,
                block_bytes=self.block_bytes,
                budget_blocks=self._pool.num_blocks,
                disk=self._disk.stats() if self._disk is not None else None,
            )
