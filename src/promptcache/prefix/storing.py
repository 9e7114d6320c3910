"""Storing a commit's new blocks: slots found under the cache's lock, KV copied outside
it, the blocks published (and pinned) under it again, then offered to the disk tier."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from promptcache.prefix.base import CommitReport
from promptcache.prefix.disk.tier import DiskTier
from promptcache.prefix.disk.tiering import write_through
from promptcache.prefix.hashing import BlockHash
from promptcache.prefix.pool import KVBlockPool
from promptcache.prefix.tree import BlockTree
from promptcache.request import PinTTL


@dataclass(frozen=True, kw_only=True)
class BlockStore:
    """A prefix cache's tree, pool, lock, clock and disk tier, as a commit uses them."""

    tree: BlockTree
    pool: KVBlockPool
    lock: threading.Condition
    clock: Callable[[], float]
    disk: DiskTier | None

    def store(
        self,
        *,
        root: BlockHash,
        hashes: Sequence[BlockHash],
        tokens: tuple[int, ...],
        kv: torch.Tensor,
        pins: Sequence[tuple[int, PinTTL]],
        matched: int,
    ) -> CommitReport:
        """Store the full blocks of ``tokens`` (``hashes``) not cached yet, from ``kv``;
        ``matched``: how many the committing match holds already (the lock is not held)."""
        tree = self.tree
        size = self.pool.block_size
        num_full = len(tokens) // size
        with self.lock:
            tree.expire_pins(self.clock())
            chain = tree.confirmed_chain(hashes, tokens, root)
            # Hold the cached chain beyond the match while copying outside the
            # lock: its blocks are the parents of what we store.
            extra_refs = chain[matched:]
            for block in extra_refs:
                tree.reference(block)
            evicted = 0
            first_new = len(chain)
            slots: list[int] = []
            if first_new < num_full:
                room, evicted = tree.make_room_for_hash(hashes[first_new])
                if room:
                    slots, evicted_now = tree.allocate(num_full - first_new)
                    evicted += evicted_now

        try:
            if slots:
                self.pool.write(slots, kv, start=first_new * size)
        except BaseException:
            with self.lock:
                self.pool.free(slots)
                tree.unreference(extra_refs)
            raise

        with self.lock:
            now = self.clock()
            stored, written = tree.insert(chain, hashes, tokens, slots, root)
            new_blocks = stored[len(chain) :]
            pinned, refused, uncached = tree.apply_pins(stored, pins, num_full, now)
            # Tail first, so the policy evicts a prompt's last blocks before its parents.
            for block in reversed(new_blocks):
                tree.update_evictable(block)
            tree.unreference(extra_refs)
        if self.disk is not None:  # a copy per block into the writer's queue, no I/O here
            write_through(
                self.disk, stored, first_new=len(chain), root=root, kv=kv, block_size=size
            )
        return CommitReport(
            tokens_written=written * size,
            tokens_not_stored=(num_full - len(stored)) * size,
            pinned=pinned,
            pins_refused=refused,
            pins_uncached=uncached,
            blocks_evicted=evicted,
        )
