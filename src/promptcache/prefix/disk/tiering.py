"""Moving blocks between the RAM tier (the block tree over the pool) and the disk tier.

Down: :class:`SpillingTree` hands each block the RAM tier evicts to the disk
tier before its slot is reused (a copy of one slot into the writer's queue),
and :func:`write_through` offers each newly committed block, so the disk
holds what RAM holds and a restart loses nothing written. Up: a match whose
chain runs past the RAM blocks into stored ones gets a :class:`Promotion`:
planned under the cache's lock (the chain referenced, the disk blocks claimed
so concurrent requests wait for them instead of reading them twice, RAM slots
allocated), loaded outside it (file reads, checksums, copies into the slots),
then published in the tree under the lock again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from promptcache.prefix.base import MatchKey
from promptcache.prefix.block import CachedBlock
from promptcache.prefix.config import PrefixCacheConfig
from promptcache.prefix.disk.fingerprint import kv_fingerprint
from promptcache.prefix.disk.index import DiskEntry
from promptcache.prefix.disk.tier import DiskTier
from promptcache.prefix.hashing import BlockHash
from promptcache.prefix.inflight import InflightClaims
from promptcache.prefix.pool import KVBlockPool, KVLayout
from promptcache.prefix.tree import BlockTree


class SpillingTree(BlockTree):
    """A block tree whose evictions (not clears) go down to ``disk`` first (when one is
    given: without, it is a plain :class:`~promptcache.prefix.tree.BlockTree`)."""

    def __init__(self, pool: KVBlockPool, *, disk: DiskTier | None, **options: Any) -> None:
        super().__init__(pool, **options)
        self._disk = disk
        self._slots = pool
        self.demotions = 0
        """Evicted blocks that went to the disk tier (stored already, or queued now)."""

    def evict(self, block: CachedBlock, *, count: bool = True) -> int:
        if count and self._disk is not None:
            self._spill(self._disk, block)
        return super().evict(block, count=count)

    def _spill(self, disk: DiskTier, block: CachedBlock) -> None:
        # The same walk evict() makes: the block and its unreferenced descendants.
        pending = [block]
        while pending:
            current = pending.pop()
            if current.ref_count > 0 or not current.cached:
                continue
            parent = current.parent.hash if current.parent is not None else current.root
            slot = current.slot

            def fill(out: torch.Tensor, slot: int = slot) -> None:
                self._slots.read([slot], out, start=0)

            if disk.offer(current.hash, parent, current.token_ids, fill):
                self.demotions += 1
            pending.extend(current.children.values())


def write_through(
    disk: DiskTier,
    stored: Sequence[CachedBlock],
    *,
    first_new: int,
    root: BlockHash,
    kv: torch.Tensor,
    block_size: int,
) -> None:
    """Offer ``stored[first_new:]`` (just committed; their KV is in ``kv``) to the disk."""
    for index in range(first_new, len(stored)):
        block = stored[index]
        parent = stored[index - 1].hash if index else root
        start = index * block_size

        def fill(out: torch.Tensor, start: int = start) -> None:
            out.copy_(kv[:, :, :, start : start + block_size, :])

        disk.offer(block.hash, parent, block.token_ids, fill)


@dataclass(frozen=True, kw_only=True)
class Promoter:
    """What a prefix cache promotes with: its tree, pool, claims, and the disk tier."""

    tree: BlockTree
    pool: KVBlockPool
    disk: DiskTier
    claims: InflightClaims
    min_tokens: int

    def plan(
        self,
        key: MatchKey,
        hashes: Sequence[BlockHash],
        tokens: tuple[int, ...],
        root: BlockHash,
        chain: list[CachedBlock],
    ) -> Promotion | None:
        return Promotion.plan(
            self.tree,
            self.pool,
            self.disk,
            self.claims,
            key=key,
            hashes=hashes,
            tokens=tokens,
            root=root,
            chain=chain,
            min_tokens=self.min_tokens,
        )


@dataclass(eq=False, kw_only=True)
class Promotion:
    """Disk blocks continuing one match's RAM chain, on their way into RAM slots."""

    tree: BlockTree
    pool: KVBlockPool
    disk: DiskTier
    claims: InflightClaims
    key: MatchKey
    chain: list[CachedBlock]
    entries: list[DiskEntry]
    slots: list[int]
    claimed: set[BlockHash]
    loaded: int = 0
    held: list[CachedBlock] = field(default_factory=list)

    @classmethod
    def plan(
        cls,
        tree: BlockTree,
        pool: KVBlockPool,
        disk: DiskTier,
        claims: InflightClaims,
        *,
        key: MatchKey,
        hashes: Sequence[BlockHash],
        tokens: tuple[int, ...],
        root: BlockHash,
        chain: list[CachedBlock],
        min_tokens: int,
    ) -> Promotion | None:
        """A promotion worth making, or None (the cache's lock is held)."""
        size = pool.block_size
        start = len(chain)
        if start >= len(hashes):
            return None
        parent = chain[-1].hash if chain else root
        entries = disk.run_after(hashes, tokens, start=start, parent_hash=parent, block_size=size)
        claimed: set[BlockHash] = set()
        for entry in entries:
            got = claims.claim(key, [BlockHash(entry.block_hash)])
            if not got:
                break  # another request is promoting or computing it
            claimed |= got
        entries = entries[: len(claimed)]
        if (start + len(entries)) * size < max(min_tokens, 1):
            claims.release(key, claimed)
            return None
        for block in chain:  # the parents: not evicted while slots are found
            tree.reference(block)
        room, _ = tree.make_room_for_hash(hashes[start])
        slots = tree.allocate(len(entries))[0] if room else []
        if (start + len(slots)) * size < max(min_tokens, 1):
            pool.free(slots)
            tree.unreference(chain)
            claims.release(key, claimed)
            return None
        return cls(
            tree=tree,
            pool=pool,
            disk=disk,
            claims=claims,
            key=key,
            chain=list(chain),
            entries=entries[: len(slots)],
            slots=slots,
            claimed=claimed,
        )

    def run(
        self,
        lock: threading.Condition,
        hashes: Sequence[BlockHash],
        tokens: tuple[int, ...],
        root: BlockHash,
    ) -> list[CachedBlock]:
        """Load (outside ``lock``, the cache's), then publish under it: the chain now
        cached, referenced until :meth:`unreference`. On an error nothing stays held."""
        try:
            self.load()
        except BaseException:
            with lock:
                self.finish(hashes, tokens, root)
                self.unreference()
            raise
        with lock:
            return self.finish(hashes, tokens, root)

    def load(self) -> None:
        """Read the blocks into their slots, stopping at the first one refused (no lock)."""
        for entry, slot in zip(self.entries, self.slots, strict=True):
            kv = self.disk.load(entry)
            if kv is None:
                break
            self.pool.write([slot], kv, start=0)
            self.loaded += 1

    def finish(
        self, hashes: Sequence[BlockHash], tokens: tuple[int, ...], root: BlockHash
    ) -> list[CachedBlock]:
        """Publish the loaded blocks; the chain now cached (the lock is held). The blocks
        stay referenced for the caller until :meth:`unreference`."""
        stored, _ = self.tree.insert(self.chain, hashes, tokens, self.slots[: self.loaded], root)
        self.pool.free(self.slots[self.loaded :])
        for block in stored[len(self.chain) :]:
            self.tree.reference(block)
        self.held = stored
        self.claims.release(self.key, self.claimed)
        return stored

    @property
    def promoted(self) -> int:
        return len(self.held) - len(self.chain)

    def unreference(self) -> None:
        self.tree.unreference(self.held)


def open_disk_tier(
    config: PrefixCacheConfig,
    layout: KVLayout,
    *,
    model_id: str,
    extra: Mapping[str, object] | None,
) -> DiskTier:
    """The disk tier ``config`` asks for (``config.disk_path`` set), bound by fingerprint
    to the model, the KV layout and dtype, the block size and ``extra``."""
    assert config.disk_path is not None
    return DiskTier(
        Path(config.disk_path).expanduser(),
        budget_bytes=config.disk_bytes,
        queue_bytes=config.disk_write_queue_bytes,
        block_shape=(
            layout.num_layers,
            2,
            layout.num_kv_heads,
            config.block_size,
            layout.head_dim,
        ),
        dtype=layout.dtype,
        fingerprint=kv_fingerprint(model_id, layout, config.block_size, extra or {}),
    )
