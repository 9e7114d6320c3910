"""The prefix cache's figures: what lookups asked and found, and what is stored now."""

from __future__ import annotations

from dataclasses import dataclass

from promptcache.prefix.tree import BlockTree
from promptcache.result import PrefixCacheSnapshot


@dataclass
class LookupCounters:
    """Prompt tokens looked up and found cached, since the cache was built."""

    tokens_queried: int = 0
    tokens_hit: int = 0

    def record(self, *, queried: int, hit: int = 0) -> None:
        self.tokens_queried += queried
        self.tokens_hit += hit


def snapshot(
    counters: LookupCounters, tree: BlockTree, *, block_bytes: int, budget_blocks: int
) -> PrefixCacheSnapshot:
    """The figures now (the caller holds the cache's lock, pins already expired)."""
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
    )
