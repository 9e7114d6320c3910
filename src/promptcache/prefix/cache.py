"""The prefix (context) KV cache: which token prefixes have stored KV, and sharing it safely.

One :class:`PrefixCache` per loaded model. A request calls :meth:`~PrefixCache.match`
with its prompt tokens and gets a :class:`PrefixMatch` -- the longest cached,
block-aligned prefix, referenced so it cannot be evicted -- then
:meth:`~PrefixCache.gather` copies that KV into its own buffer, the engine
computes the rest, :meth:`~PrefixCache.commit` stores the new full blocks,
and :meth:`~PrefixCache.release` (always, in ``finally``) drops the references.

Blocks form trees: each cached block points at its parent, and a hit is
confirmed by identity of the parent and equality of the token ids, never by
the hash alone. Evicting a block evicts its descendants too, since without the
parent they can never be reached again. Unreferenced, unpinned blocks stay
cached (lazy eviction) until their slot is needed; the eviction policy picks
the victim. Pinned blocks (explicit breakpoints) survive until their TTL
expires; every hit refreshes it.

In-flight sharing: ``match`` claims the blocks its request is about to
compute. A second request whose next block is claimed waits on the condition
variable until the owner commits or releases, then matches again -- so N
concurrent identical prefixes are computed once.

Thread-safe: one lock guards all bookkeeping; KV copies of blocks a caller
holds (gather, the body of commit) run outside it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from promptcache.prefix import hashing
from promptcache.prefix.block import CachedBlock
from promptcache.prefix.config import PrefixCacheConfig
from promptcache.prefix.eviction import make_eviction_policy
from promptcache.prefix.hashing import BlockHash
from promptcache.prefix.pins import PinTable
from promptcache.prefix.pool import KVBlockPool, KVLayout
from promptcache.request import TTL_SECONDS, CacheTTL, PrefixCacheSnapshot

__all__ = [
    "CommitReport",
    "KVLayout",
    "PrefixCache",
    "PrefixCacheConfig",
    "PrefixMatch",
]

# How often a waiter re-checks its cancel event: threading.Event cannot wake a Condition.
_CANCEL_POLL_SECONDS = 0.05


@dataclass(eq=False, kw_only=True)
class PrefixMatch:
    """The cached prefix of one request: a handle, never shared between requests.

    ``num_tokens`` cached tokens (a multiple of the block size, 0 on a miss)
    sit in pool slots ``block_ids``. ``hashes`` names every full block of the
    prompt. Pass the handle back to ``gather``, ``commit`` and ``release``.
    """

    num_tokens: int
    block_ids: tuple[int, ...]
    salt: str
    root: BlockHash
    hashes: tuple[BlockHash, ...]
    _id: int = field(repr=False)
    _blocks: tuple[CachedBlock, ...] = field(default=(), repr=False)
    _claims: set[BlockHash] = field(default_factory=set, repr=False)
    _released: bool = field(default=False, repr=False)
    _committed: bool = field(default=False, repr=False)

    @property
    def num_blocks(self) -> int:
        return len(self.block_ids)


@dataclass(frozen=True, kw_only=True)
class CommitReport:
    """What ``commit`` did. Positions are block-aligned token counts from the prompt start."""

    tokens_written: int = 0
    """Tokens newly stored (blocks already cached are not counted)."""
    tokens_not_stored: int = 0
    """Full-block tokens that should have been stored but did not fit the budget."""
    pinned: tuple[tuple[int, CacheTTL], ...] = ()
    pins_refused: tuple[tuple[int, CacheTTL], ...] = ()
    """Pins not applied because they would exceed ``max_pinned_fraction`` of the budget."""
    pins_uncached: tuple[tuple[int, CacheTTL], ...] = ()
    """Pins not applied because their prefix is not cached: shorter than
    ``min_cache_tokens`` (or than one block), or not stored for lack of budget."""
    blocks_evicted: int = 0


class PrefixCache:
    """Cached KV blocks of one model, shared by every request and tenant (salted apart).

    ``model_id`` names the weights (part of every block hash: another model
    never hits); ``clock`` measures pin TTLs (inject a fake one in tests).
    Storage is allocated lazily, in chunks, up to ``config.kv_cache_bytes``.
    """

    def __init__(
        self,
        config: PrefixCacheConfig,
        layout: KVLayout,
        *,
        model_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.layout = layout
        self.model_id = model_id
        self._clock = clock
        self.block_bytes = config.block_size * layout.bytes_per_token
        num_blocks = config.kv_cache_bytes // self.block_bytes if config.enabled else 0
        self._pool = KVBlockPool(layout, block_size=config.block_size, num_blocks=num_blocks)
        self._max_pinned_blocks = int(config.max_pinned_fraction * num_blocks)
        self._policy = make_eviction_policy(config.eviction)
        self._cond = threading.Condition(threading.Lock())
        self._by_hash: dict[BlockHash, CachedBlock] = {}
        self._blocks: dict[int, CachedBlock] = {}
        self._pins = PinTable()
        self._claims: dict[BlockHash, int] = {}
        self._serials = itertools.count(1)
        self._match_ids = itertools.count(1)
        self._tokens_queried = 0
        self._tokens_hit = 0
        self._evictions = 0
        self._waiting = 0

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def min_cache_tokens(self) -> int:
        return self.config.min_cache_tokens

    @property
    def blocks_in_use(self) -> int:
        """Cached blocks some request references right now (0 when every request released)."""
        with self._cond:
            return self._count_referenced()

    @property
    def claims_in_flight(self) -> int:
        """Blocks some request has claimed to compute and not yet committed or released."""
        with self._cond:
            return len(self._claims)

    @property
    def requests_waiting(self) -> int:
        """Requests sleeping until blocks another request is computing are committed."""
        with self._cond:
            return self._waiting

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
        handle = PrefixMatch(
            num_tokens=0, block_ids=(), salt=salt, root=root, hashes=(), _id=next(self._match_ids)
        )
        if not self.config.enabled:
            return handle
        num_full = len(tokens) // self.block_size
        if num_full * self.block_size < max(self.min_cache_tokens, 1):
            with self._cond:
                self._tokens_queried += len(tokens)
            return handle
        hashes = hashing.hash_prompt_blocks(tokens, block_size=self.block_size, root=root)
        handle.hashes = tuple(hashes)
        with self._cond:
            chain = self._wait_for_inflight(handle, tokens, cancel)
            now = self._clock()
            self._expire_pins(now)
            first_missing = len(chain)
            if len(chain) * self.block_size < self.min_cache_tokens:
                chain = []
            for block in chain:
                self._reference(block)
                self._pins.refresh(block, now)
            handle._blocks = tuple(chain)
            handle.block_ids = tuple(block.slot for block in chain)
            handle.num_tokens = len(chain) * self.block_size
            if cancel is None or not cancel.is_set():
                for block_hash in hashes[first_missing:]:
                    if block_hash not in self._claims:
                        self._claims[block_hash] = handle._id
                        handle._claims.add(block_hash)
            self._tokens_queried += len(tokens)
            self._tokens_hit += handle.num_tokens
        return handle

    def _wait_for_inflight(
        self, handle: PrefixMatch, tokens: tuple[int, ...], cancel: threading.Event | None
    ) -> list[CachedBlock]:
        """The confirmed cached chain, after waiting out claims on the block right after it."""
        deadline: float | None = None
        while True:
            chain = self._confirmed_chain(handle.hashes, tokens, handle.root)
            if len(chain) == len(handle.hashes):
                return chain
            if cancel is not None and cancel.is_set():
                return chain
            if self._claimed_reach(handle.hashes, len(chain)) * self.block_size < max(
                self.min_cache_tokens, 1
            ):
                return chain  # nothing claimed next, or too little to make a usable hit
            # Wall time, not the injectable clock: this bounds a real wait.
            if deadline is None:
                deadline = time.monotonic() + self.config.inflight_wait_seconds
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return chain
            if cancel is not None:
                remaining = min(remaining, _CANCEL_POLL_SECONDS)
            self._waiting += 1
            try:
                self._cond.wait(remaining)
            finally:
                self._waiting -= 1

    def _claimed_reach(self, hashes: Sequence[BlockHash], start: int) -> int:
        """How many leading blocks would be cached once the claims from ``start`` on land."""
        reach = start
        while reach < len(hashes) and hashes[reach] in self._claims:
            reach += 1
        return reach if reach > start else 0

    def _confirmed_chain(
        self, hashes: Sequence[BlockHash], tokens: tuple[int, ...], root: BlockHash
    ) -> list[CachedBlock]:
        chain: list[CachedBlock] = []
        parent: CachedBlock | None = None
        size = self.block_size
        for index, block_hash in enumerate(hashes):
            block = self._by_hash.get(block_hash)
            if block is None or not self._confirms(
                block, tokens[index * size : (index + 1) * size], parent, root
            ):
                break
            chain.append(block)
            parent = block
        return chain

    @staticmethod
    def _confirms(
        block: CachedBlock, token_ids: tuple[int, ...], parent: CachedBlock | None, root: BlockHash
    ) -> bool:
        # A hash hit alone is not trusted: same parent (same root for block 0)
        # and same token ids, or it is a collision.
        if block.parent is not parent or block.token_ids != token_ids:
            return False
        return parent is not None or block.root == root

    # -- gather ------------------------------------------------------------

    def gather(self, match: PrefixMatch, out: torch.Tensor) -> None:
        """Copy the matched KV into ``out[:, :, :, :match.num_tokens, :]``."""
        if match._released:
            raise RuntimeError("gather() on a released PrefixMatch")
        if match.num_tokens == 0:
            return
        self.layout.check(out, min_tokens=match.num_tokens, name="out")
        # No lock: the match references these blocks, so their slots cannot be
        # evicted or rewritten while we copy.
        self._pool.read(match.block_ids, out, start=0)

    # -- commit ------------------------------------------------------------

    def commit(
        self,
        match: PrefixMatch,
        token_ids: Sequence[int],
        kv: torch.Tensor,
        *,
        pins: Sequence[tuple[int, CacheTTL]] = (),
    ) -> CommitReport:
        """Store the full blocks of ``token_ids`` not cached yet, from ``kv[..., pos, :]``.

        ``token_ids`` must start with the prompt given to ``match`` (it may go
        on, e.g. with generated tokens whose KV is in ``kv``). ``pins`` are
        ``(token_position, ttl)`` breakpoints: the blocks up to
        ``position // block_size`` are pinned for the TTL, unless that would
        exceed the pinned cap. Releases this match's claims and wakes waiters;
        the references stay until :meth:`release`.
        """
        if match._released:
            raise RuntimeError("commit() on a released PrefixMatch")
        if match._committed:
            raise RuntimeError("commit() called twice on one PrefixMatch")
        match._committed = True
        try:
            return self._commit(match, tuple(token_ids), kv, pins)
        finally:
            with self._cond:
                self._release_claims(match)

    def _commit(
        self,
        match: PrefixMatch,
        tokens: tuple[int, ...],
        kv: torch.Tensor,
        pins: Sequence[tuple[int, CacheTTL]],
    ) -> CommitReport:
        for _, ttl in pins:
            if ttl not in TTL_SECONDS:
                raise ValueError(f"unknown cache TTL {ttl!r}; valid: {', '.join(TTL_SECONDS)}")
        size = self.block_size
        num_full = len(tokens) // size
        pins_skipped = tuple(
            (min(max(0, pos), num_full * size) // size * size, ttl) for pos, ttl in pins
        )
        if not self.config.enabled or num_full * size < max(self.min_cache_tokens, 1):
            return CommitReport(pins_uncached=pins_skipped)
        hashes = hashing.hash_prompt_blocks(tokens, block_size=size, root=match.root)
        if tuple(hashes[: match.num_blocks]) != match.hashes[: match.num_blocks]:
            raise ValueError("commit() token_ids do not start with the matched prompt")
        self.layout.check(kv, min_tokens=num_full * size, name="kv")

        with self._cond:
            self._expire_pins(self._clock())
            chain = self._confirmed_chain(hashes, tokens, match.root)
            # Hold the cached chain beyond the match while copying outside the
            # lock: its blocks are the parents of what we store.
            extra_refs = chain[match.num_blocks :]
            for block in extra_refs:
                self._reference(block)
            evicted = 0
            first_new = len(chain)
            slots: list[int] = []
            if first_new < num_full:
                room, evicted = self._make_room_for_hash(hashes[first_new])
                if room:
                    slots, evicted_now = self._allocate(num_full - first_new)
                    evicted += evicted_now

        try:
            if slots:
                self._pool.write(slots, kv, start=first_new * size)
        except BaseException:
            with self._cond:
                self._pool.free(slots)
                self._unreference(extra_refs)
            raise

        with self._cond:
            now = self._clock()
            stored, written = self._insert_blocks(chain, hashes, tokens, slots, match.root)
            new_blocks = stored[len(chain) :]
            pinned, refused, uncached = self._apply_pins(stored, pins, num_full, now)
            # Tail first, so the policy evicts a prompt's last blocks before its parents.
            for block in reversed(new_blocks):
                self._update_evictable(block)
            self._unreference(extra_refs)
        return CommitReport(
            tokens_written=written * size,
            tokens_not_stored=(num_full - len(stored)) * size,
            pinned=pinned,
            pins_refused=refused,
            pins_uncached=uncached,
            blocks_evicted=evicted,
        )

    def _make_room_for_hash(self, block_hash: BlockHash) -> tuple[bool, int]:
        """Whether a new block may take ``block_hash`` (evicting an evictable stranger holding
        it: a collision, or a block orphaned by an earlier eviction), and how many blocks went."""
        holder = self._by_hash.get(block_hash)
        if holder is None:
            return True, 0
        if holder.ref_count == 0 and holder not in self._pins:
            return True, self._evict(holder)
        return False, 0

    def _insert_blocks(
        self,
        chain: list[CachedBlock],
        hashes: Sequence[BlockHash],
        tokens: tuple[int, ...],
        slots: list[int],
        root: BlockHash,
    ) -> tuple[list[CachedBlock], int]:
        """Publish the freshly written slots; returns the stored chain and how many are new.

        Another request may have stored some of these blocks meanwhile (after
        an in-flight wait timed out): then its copy is kept and ours dropped.
        """
        size = self.block_size
        stored = list(chain)
        parent = chain[-1] if chain else None
        written = 0
        for offset, slot in enumerate(slots):
            index = len(chain) + offset
            block_tokens = tokens[index * size : (index + 1) * size]
            holder = self._by_hash.get(hashes[index])
            if holder is not None:
                if not self._confirms(holder, block_tokens, parent, root):
                    self._pool.free(slots[offset:])
                    break
                self._pool.free([slot])
                stored.append(holder)
                parent = holder
                continue
            block = CachedBlock(
                serial=next(self._serials),
                slot=slot,
                hash=hashes[index],
                token_ids=block_tokens,
                root=root,
                parent=parent,
                cached=True,
            )
            self._by_hash[block.hash] = block
            self._blocks[block.serial] = block
            if parent is not None:
                parent.children[block.serial] = block
            stored.append(block)
            parent = block
            written += 1
        return stored, written

    def _apply_pins(
        self,
        stored: list[CachedBlock],
        pins: Sequence[tuple[int, CacheTTL]],
        num_full: int,
        now: float,
    ) -> tuple[
        tuple[tuple[int, CacheTTL], ...],
        tuple[tuple[int, CacheTTL], ...],
        tuple[tuple[int, CacheTTL], ...],
    ]:
        pinned: list[tuple[int, CacheTTL]] = []
        refused: list[tuple[int, CacheTTL]] = []
        uncached: list[tuple[int, CacheTTL]] = []
        size = self.block_size
        # Shortest first: a long pin refused by the cap must not cost a short one.
        for position, ttl in sorted(pins, key=lambda pin: pin[0]):
            covered = min(max(0, position) // size, num_full)
            aligned = covered * size
            if covered == 0 or covered > len(stored) or aligned < self.min_cache_tokens:
                uncached.append((aligned, ttl))
                continue
            blocks = stored[:covered]
            if len(self._pins) + self._pins.count_unpinned(blocks) > self._max_pinned_blocks:
                refused.append((aligned, ttl))
                continue
            for block in blocks:
                self._pins.pin(block, now, float(TTL_SECONDS[ttl]))
                self._policy.discard(block.serial)
            pinned.append((aligned, ttl))
        return tuple(pinned), tuple(refused), tuple(uncached)

    # -- release / clear / stats ------------------------------------------

    def release(self, match: PrefixMatch) -> None:
        """Drop the match's references and claims. Idempotent; call it in ``finally``."""
        with self._cond:
            if match._released:
                return
            match._released = True
            self._unreference(list(match._blocks))
            self._release_claims(match)

    def clear(self) -> None:
        """Drop every unreferenced block, pinned or not (blocks in use stay)."""
        with self._cond:
            for block in list(self._blocks.values()):
                if block.cached and block.ref_count == 0:
                    self._evict(block, count=False)
            self._pool.release_unused_chunks()

    def stats(self) -> PrefixCacheSnapshot:
        with self._cond:
            self._expire_pins(self._clock())
            return PrefixCacheSnapshot(
                tokens_queried=self._tokens_queried,
                tokens_hit=self._tokens_hit,
                kv_bytes_used=len(self._blocks) * self.block_bytes,
                kv_bytes_pinned=len(self._pins) * self.block_bytes,
                kv_bytes_budget=self._pool.num_blocks * self.block_bytes,
                blocks_used=len(self._blocks),
                blocks_pinned=len(self._pins),
                blocks_referenced=self._count_referenced(),
                evictions=self._evictions,
            )

    # -- bookkeeping (lock held) ----------------------------------------------

    def _count_referenced(self) -> int:
        # A scan, not a counter kept in _reference/_unreference: stats are rare
        # and a scan cannot drift from the ref counts it reports on.
        return sum(1 for block in self._blocks.values() if block.ref_count > 0)

    def _reference(self, block: CachedBlock) -> None:
        block.ref_count += 1
        self._policy.discard(block.serial)

    def _unreference(self, blocks: Sequence[CachedBlock]) -> None:
        for block in reversed(blocks):
            block.ref_count -= 1
            self._update_evictable(block)

    def _update_evictable(self, block: CachedBlock) -> None:
        if block.cached and block.ref_count == 0 and block not in self._pins:
            self._policy.add(block.serial)

    def _release_claims(self, match: PrefixMatch) -> None:
        if not match._claims:
            return
        for block_hash in match._claims:
            if self._claims.get(block_hash) == match._id:
                del self._claims[block_hash]
        match._claims.clear()
        self._cond.notify_all()

    def _allocate(self, count: int) -> tuple[list[int], int]:
        """Up to ``count`` slots, evicting by policy when the pool is full."""
        slots = self._pool.allocate(count)
        evicted = 0
        while len(slots) < count:
            victim = self._policy.pop_victim()
            if victim is None:
                break
            evicted += self._evict(self._blocks[victim])
            slots.extend(self._pool.allocate(count - len(slots)))
        slots.sort()
        return slots, evicted

    def _evict(self, block: CachedBlock, *, count: bool = True) -> int:
        """Drop ``block`` and its descendants (unreachable without it); returns how many."""
        dropped = 0
        pending = [block]
        while pending:
            current = pending.pop()
            if current.ref_count > 0:
                continue  # cannot happen for a descendant of an evictable block; be safe
            self._policy.discard(current.serial)
            self._pins.discard(current)
            del self._blocks[current.serial]
            if self._by_hash.get(current.hash) is current:
                del self._by_hash[current.hash]
            if current.parent is not None:
                current.parent.children.pop(current.serial, None)
            current.cached = False
            self._pool.free([current.slot])
            pending.extend(current.children.values())
            current.children = {}
            dropped += 1
        if count:
            self._evictions += dropped
        return dropped

    def _expire_pins(self, now: float) -> None:
        """Blocks whose pin ended become evictable like any other."""
        for block in self._pins.expire(now):
            self._update_evictable(block)
