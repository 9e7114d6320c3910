"""The cached blocks as trees: lookup, insertion, references, pins and eviction.

Each cached block points at its parent, and a hit is confirmed by identity of
the parent and equality of the token ids, never by the hash alone. Evicting a
block evicts its descendants too, since without the parent they can never be
reached again. Unreferenced, unpinned blocks stay cached (lazy eviction) until
their slot is needed; the eviction policy picks the victim. Pinned blocks
(explicit breakpoints) survive until their TTL expires.

Not thread-safe: :class:`~promptcache.prefix.cache.PrefixCache` calls every
method with its lock held. The KV itself lives in the pool's slots.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from promptcache.prefix.base import MissCause, PinCapError
from promptcache.prefix.block import CachedBlock
from promptcache.prefix.eviction import make_eviction_policy
from promptcache.prefix.hashing import BlockHash
from promptcache.prefix.pins import Pins, PinTable
from promptcache.prefix.pool import KVBlockPool
from promptcache.request import PIN_TTL_SECONDS, PinTTL


class BlockTree:
    """Blocks by hash and by serial, over ``pool``'s slots, evicted by the ``eviction`` policy."""

    def __init__(
        self,
        pool: KVBlockPool,
        *,
        eviction: str,
        max_pinned_blocks: int,
        min_cache_tokens: int,
    ) -> None:
        self._pool = pool
        self._block_size = pool.block_size
        self._min_cache_tokens = min_cache_tokens
        self._max_pinned_blocks = max_pinned_blocks
        self._policy = make_eviction_policy(eviction)
        self._by_hash: dict[BlockHash, CachedBlock] = {}
        self._blocks: dict[int, CachedBlock] = {}
        self._pins = PinTable()
        self._serials = itertools.count(1)
        self.evictions = 0
        # Diagnostics (bounded): hashes of recently evicted blocks and why they went,
        # hashes whose pin ran out, and which root cached each recent block 0.
        self._gone: OrderedDict[BlockHash, MissCause] = OrderedDict()
        self._expired: OrderedDict[BlockHash, None] = OrderedDict()
        self._first_blocks: OrderedDict[tuple[int, ...], BlockHash] = OrderedDict()
        self.memory = max(1024, 4 * pool.num_blocks)

    @property
    def num_blocks(self) -> int:
        return len(self._blocks)

    @property
    def num_pinned(self) -> int:
        return len(self._pins)

    def count_referenced(self) -> int:
        # A scan, not a counter kept in reference/unreference: stats are rare
        # and a scan cannot drift from the ref counts it reports on.
        return sum(1 for block in self._blocks.values() if block.ref_count > 0)

    # -- lookup -----------------------------------------------------------------

    def confirmed_chain(
        self, hashes: Sequence[BlockHash], tokens: tuple[int, ...], root: BlockHash
    ) -> list[CachedBlock]:
        """The cached blocks of ``tokens`` from the start, as far as they are confirmed."""
        chain: list[CachedBlock] = []
        parent: CachedBlock | None = None
        size = self._block_size
        for index, block_hash in enumerate(hashes):
            block = self._by_hash.get(block_hash)
            if block is None or not _confirms(
                block, tokens[index * size : (index + 1) * size], parent, root
            ):
                break
            chain.append(block)
            parent = block
        return chain

    def miss_cause(
        self,
        hashes: Sequence[BlockHash],
        tokens: tuple[int, ...],
        root: BlockHash,
        chain: Sequence[CachedBlock],
    ) -> MissCause | None:
        """Why the block after ``chain`` (the confirmed prefix) is not cached, or None when
        every full block is. ``changed``: another continuation of the prefix is cached;
        ``cold``: nothing past it ever was (a conversation growing past its cached turns)."""
        first_missing = len(chain)
        if first_missing >= len(hashes):
            return None
        gone = self._gone.get(hashes[first_missing])
        if gone is not None:
            return gone
        if first_missing == 0:
            other = self._first_blocks.get(tokens[: self._block_size])
            return "tenant" if other is not None and other != root else "cold"
        return "changed" if chain[-1].children else "cold"

    def _remember(self, table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self.memory:
            table.popitem(last=False)

    # -- references and pins ----------------------------------------------------

    def reference(self, block: CachedBlock) -> None:
        block.ref_count += 1
        self._policy.discard(block.serial)

    def unreference(self, blocks: Sequence[CachedBlock]) -> None:
        for block in reversed(blocks):
            block.ref_count -= 1
            self.update_evictable(block)

    def update_evictable(self, block: CachedBlock) -> None:
        if block.cached and block.ref_count == 0 and block not in self._pins:
            self._policy.add(block.serial)

    def refresh_pin(self, block: CachedBlock, now: float) -> None:
        """A hit on a pinned block extends its pin by its own TTL."""
        self._pins.refresh(block, now)

    def expire_pins(self, now: float) -> None:
        """Blocks whose pin ended become evictable like any other."""
        for block in self._pins.expire(now):
            self._remember(self._expired, block.hash, None)
            self.update_evictable(block)

    def apply_pins(
        self,
        stored: list[CachedBlock],
        pins: Sequence[tuple[int, PinTTL]],
        num_full: int,
        now: float,
    ) -> tuple[Pins, Pins, Pins]:
        """Pin the stored blocks each pin covers: (pinned, refused by the cap, uncached)."""
        pinned: list[tuple[int, PinTTL]] = []
        refused: list[tuple[int, PinTTL]] = []
        uncached: list[tuple[int, PinTTL]] = []
        size = self._block_size
        # Shortest first: a long pin refused by the cap must not cost a short one.
        for position, ttl in sorted(pins, key=lambda pin: pin[0]):
            covered = min(max(0, position) // size, num_full)
            aligned = covered * size
            if covered == 0 or covered > len(stored) or aligned < self._min_cache_tokens:
                uncached.append((aligned, ttl))
                continue
            blocks = stored[:covered]
            if len(self._pins) + self._pins.count_unpinned(blocks) > self._max_pinned_blocks:
                refused.append((aligned, ttl))
                continue
            for block in blocks:
                self._pins.pin(block, now, float(PIN_TTL_SECONDS[ttl]))
                self._policy.discard(block.serial)
            pinned.append((aligned, ttl))
        return tuple(pinned), tuple(refused), tuple(uncached)

    def hold(self, blocks: Sequence[CachedBlock]) -> None:
        """Pin ``blocks`` with no expiry (a named prefix), or raise :class:`PinCapError`
        when that would exceed the pinned cap."""
        needed = self._pins.count_unpinned(blocks)
        if len(self._pins) + needed > self._max_pinned_blocks:
            raise PinCapError(
                needed_blocks=needed,
                pinned_blocks=len(self._pins),
                max_pinned_blocks=self._max_pinned_blocks,
            )
        for block in blocks:
            self._pins.hold(block)
            self._policy.discard(block.serial)

    def release_hold(self, blocks: Sequence[CachedBlock]) -> None:
        for block in reversed(blocks):  # tail first, as a commit adds them
            if self._pins.release_hold(block):
                self.update_evictable(block)

    # -- storing ------------------------------------------------------------------

    def make_room_for_hash(self, block_hash: BlockHash) -> tuple[bool, int]:
        """Whether a new block may take ``block_hash`` (evicting an evictable stranger holding
        it: a collision, or a block orphaned by an earlier eviction), and how many blocks went."""
        holder = self._by_hash.get(block_hash)
        if holder is None:
            return True, 0
        if holder.ref_count == 0 and holder not in self._pins:
            return True, self.evict(holder)
        return False, 0

    def allocate(self, count: int) -> tuple[list[int], int]:
        """Up to ``count`` slots, evicting by policy when the pool is full."""
        slots = self._pool.allocate(count)
        evicted = 0
        while len(slots) < count:
            victim = self._policy.pop_victim()
            if victim is None:
                break
            evicted += self.evict(self._blocks[victim])
            slots.extend(self._pool.allocate(count - len(slots)))
        slots.sort()
        return slots, evicted

    def insert(
        self,
        chain: list[CachedBlock],
        hashes: Sequence[BlockHash],
        tokens: tuple[int, ...],
        slots: list[int],
        root: BlockHash,
    ) -> tuple[list[CachedBlock], int]:
        """Publish the freshly written slots after ``chain``; returns the stored chain and
        how many blocks are new.

        Another request may have stored some of these blocks meanwhile (after
        an in-flight wait timed out): then its copy is kept and ours dropped.
        """
        size = self._block_size
        stored = list(chain)
        parent = chain[-1] if chain else None
        written = 0
        for offset, slot in enumerate(slots):
            index = len(chain) + offset
            block_tokens = tokens[index * size : (index + 1) * size]
            holder = self._by_hash.get(hashes[index])
            if holder is not None:
                if not _confirms(holder, block_tokens, parent, root):
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
            self._gone.pop(block.hash, None)
            if index == 0:
                self._remember(self._first_blocks, block_tokens, root)
            if parent is not None:
                parent.children[block.serial] = block
            stored.append(block)
            parent = block
            written += 1
        return stored, written

    # -- eviction -----------------------------------------------------------------

    def evict(self, block: CachedBlock, *, count: bool = True) -> int:
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
            cause: MissCause = "expired" if current.hash in self._expired else "evicted"
            self._remember(self._gone, current.hash, cause)
            pending.extend(current.children.values())
            current.children = {}
            dropped += 1
        if count:
            self.evictions += dropped
        return dropped

    def clear(self) -> None:
        """Drop every unreferenced block, pinned or not (not counted as evictions)."""
        for block in list(self._blocks.values()):
            if block.cached and block.ref_count == 0:
                self.evict(block, count=False)
        self._pool.release_unused_chunks()


def _confirms(
    block: CachedBlock, token_ids: tuple[int, ...], parent: CachedBlock | None, root: BlockHash
) -> bool:
    # A hash hit alone is not trusted: same parent (same root for block 0)
    # and same token ids, or it is a collision.
    if block.parent is not parent or block.token_ids != token_ids:
        return False
    return parent is not None or block.root == root
