"""The KV prefix (context) cache: hash chain, block pool and the cache that shares them.

Read :mod:`promptcache.prefix.cache` first (match, gather, commit, release);
:mod:`~promptcache.prefix.config` holds its settings,
:mod:`~promptcache.prefix.hashing` names blocks, :mod:`~promptcache.prefix.pool`
stores their KV, :mod:`~promptcache.prefix.block` and
:mod:`~promptcache.prefix.pins` keep each block's bookkeeping and pin TTLs, and
:mod:`~promptcache.prefix.eviction` orders blocks for eviction.
"""

from __future__ import annotations

from promptcache.prefix.cache import (
    CommitReport,
    PrefixCache,
    PrefixCacheConfig,
    PrefixMatch,
)
from promptcache.prefix.eviction import EVICTION_POLICIES, EvictionPolicy
from promptcache.prefix.hashing import (
    BlockHash,
    hash_block_tokens,
    hash_prompt_blocks,
    root_hash,
)
from promptcache.prefix.pool import KVBlockPool, KVLayout

__all__ = [
    "EVICTION_POLICIES",
    "BlockHash",
    "CommitReport",
    "EvictionPolicy",
    "KVBlockPool",
    "KVLayout",
    "PrefixCache",
    "PrefixCacheConfig",
    "PrefixMatch",
    "hash_block_tokens",
    "hash_prompt_blocks",
    "root_hash",
]
