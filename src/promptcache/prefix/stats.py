"""The prefix cache's figures: what lookups asked and found, and what is stored now, per tier."""

from __future__ import annotations

from dataclasses import dataclass

from promptcache.prefix.tree import BlockTree
from promptcache.result import KVTierSnapshot, PrefixCacheSnapshot


@dataclass
class LookupCounters:
    """Prompt tokens looked up and found cached, and the blocks found per tier."""

    tokens_queried: int = 0
    tokens_hit: int = 0
    blocks_from_ram: int = 0
    blocks_from_disk: int = 0
    promoted: int = 0
    """Blocks copied into RAM from the disk tier."""

    def record(self, *, queried: int, hit: int = 0, ram: int = 0, disk: int = 0) -> None:
        self.tokens_queried += queried
        self.tokens_hit += hit
        self.blocks_from_ram += ram
        self.blocks_from_disk += disk


def snapshot(
    counters: LookupCounters,
    tree: BlockTree,
    *,
    block_bytes: int,
    budget_blocks: int,
    disk: KVTierSnapshot | None = None,
) -> PrefixCacheSnapshot:
    """The figures now (the caller holds the cache's lock, pins already expired)."""
    ram = KVTierSnapshot(
        tier="ram",
        bytes_used=tree.num_blocks * block_bytes,
        bytes_budget=budget_blocks * block_bytes,
        blocks=tree.num_blocks,
        hits=counters.blocks_from_ram,
        promotions=counters.promoted,
        demotions=int(getattr(tree, "demotions", 0)),
        evictions=tree.evictions,
    )
    return PrefixCacheSnapshot(
        tokens_queried=counters.tokens_queried,
        tokens_hit=counters.tokens_hit,
        kv_bytes_used=tree.num_blocks * block_bytes,
        kv_bytes_pinned=tree.num_pinned * block_bytes,
        kv_bytes_budget=budget_blocks * block_bytes,
        blocks_used=tree.num_blocks,
        blocks_pinned=tree.num_pinned,
        blocks_referenced=tree.count_referenced(),
        evictions=tree.evictions,
        tiers=(ram,) if disk is None else (ram, disk),
    )
