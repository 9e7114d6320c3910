"""The KV prefix (context) cache: hash chain, block pool and the cache that shares them.

Read :mod:`promptcache.prefix.base` first (the interface: match, gather,
commit, release, and the :class:`PrefixMatch` handle), then
:mod:`~promptcache.prefix.cache` (the real cache) or
:mod:`~promptcache.prefix.disabled` (the one used when caching is off).
:mod:`~promptcache.prefix.config` holds the settings,
:mod:`~promptcache.prefix.hashing` names blocks, :mod:`~promptcache.prefix.pool`
stores their KV, :mod:`~promptcache.prefix.tree` keeps the cached blocks
(lookup, insertion, eviction) with :mod:`~promptcache.prefix.block` and
:mod:`~promptcache.prefix.pins` (each block's bookkeeping and pin TTLs),
:mod:`~promptcache.prefix.eviction` orders blocks for eviction,
:mod:`~promptcache.prefix.inflight` lets concurrent requests share blocks
being computed, :mod:`~promptcache.prefix.storing` stores a commit's blocks,
and :mod:`~promptcache.prefix.stats` keeps the figures (per tier).
:mod:`~promptcache.prefix.disk` is the disk tier under the RAM tier (off unless
``PrefixCacheConfig.disk_path`` is set): blocks kept across restarts.
"""

from __future__ import annotations

from promptcache.prefix.base import BasePrefixCache, CommitReport, PrefixMatch
from promptcache.prefix.cache import PrefixCache
from promptcache.prefix.config import PrefixCacheConfig
from promptcache.prefix.disabled import DisabledPrefixCache
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
    "BasePrefixCache",
    "BlockHash",
    "CommitReport",
    "DisabledPrefixCache",
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
