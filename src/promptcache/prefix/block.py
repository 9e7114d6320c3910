"""One cached KV block's bookkeeping (the KV itself lives in the pool slot)."""

from __future__ import annotations

from dataclasses import dataclass, field

from promptcache.prefix.hashing import BlockHash


@dataclass(eq=False, kw_only=True)
class CachedBlock:
    """A node of the prefix tree: its slot, identity (parent + tokens) and lifetime state.

    ``parent`` is None for block 0, whose identity is ``root`` (model + tenant
    salt). ``serial`` grows with storage time and keys the eviction policy.
    """

    serial: int
    slot: int
    hash: BlockHash
    token_ids: tuple[int, ...]
    root: BlockHash
    parent: CachedBlock | None
    children: dict[int, CachedBlock] = field(default_factory=dict)
    ref_count: int = 0
    pinned_until: float = 0.0
    pin_ttl: float = 0.0
    """The longest TTL this block was pinned with; a hit extends the pin by it."""
    cached: bool = False
    """Published in the hash map (False while being written, and once evicted)."""
