"""The prefix cache's configuration, validated on construction (ValueError names the fix)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptcache.prefix.eviction import EVICTION_POLICIES
from promptcache.prefix.pool import KV_DTYPES


@dataclass(frozen=True, kw_only=True)
class PrefixCacheConfig:
    block_size: int = 16
    """Tokens per cached block; only full blocks are cached."""
    kv_cache_bytes: int = 1 << 30
    """Byte budget for cached KV blocks (whole blocks: the remainder is unused)."""
    min_cache_tokens: int = 1024
    """A prefix shorter than this is neither read nor written."""
    max_pinned_fraction: float = 0.5
    """Cap on the share of the budget that pinned (breakpoint) blocks may hold."""
    eviction: str = "lru"
    """Eviction policy by name: see ``promptcache.prefix.eviction.EVICTION_POLICIES``."""
    enabled: bool = True
    inflight_wait_seconds: float = 120.0
    """Longest a request waits for blocks another request is computing."""
    kv_dtype: str = "float32"
    """Dtype of the KV the cache stores and the engine attends over (``KV_DTYPES``).
    float32, the model's own, keeps greedy hit == miss as the engine always has.
    float16/bfloat16 hold twice the tokens per byte of budget; KV is rounded when
    written, on a miss as on a hit, but the float32 values rounded differ in the
    last bits between a prefix computed alone and inside a longer prompt (SDPA's
    blocking), and a rounding step that flips can change a close greedy choice:
    ``benchmarks/kv_dtype.py`` counts how often, per dtype."""
    disk_path: str | None = None
    """Directory of the disk tier under the RAM tier (``prefix/disk/``); None: no disk tier."""
    disk_bytes: int = 4 << 30
    """Byte budget of the disk tier (0: no disk tier)."""
    disk_write_queue_bytes: int = 256 << 20
    """KV waiting for the disk writer, at most (at least one block); beyond it a block
    is dropped, never the request slowed."""

    def __post_init__(self) -> None:
        _require_int("block_size", self.block_size, minimum=1)
        _require_int("kv_cache_bytes", self.kv_cache_bytes, minimum=0)
        _require_int("min_cache_tokens", self.min_cache_tokens, minimum=0)
        if not 0.0 <= self.max_pinned_fraction <= 1.0:
            raise ValueError(
                f"max_pinned_fraction must be within 0..1, got {self.max_pinned_fraction!r}"
            )
        if self.eviction not in EVICTION_POLICIES:
            valid = ", ".join(sorted(EVICTION_POLICIES))
            raise ValueError(f"unknown eviction policy {self.eviction!r}; valid names: {valid}")
        _require_int("disk_bytes", self.disk_bytes, minimum=0)
        _require_int("disk_write_queue_bytes", self.disk_write_queue_bytes, minimum=0)
        if self.disk_path is not None and not str(self.disk_path).strip():
            raise ValueError("disk_path must be a directory path or None (no disk tier)")
        if self.kv_dtype not in KV_DTYPES:
            valid = ", ".join(KV_DTYPES)
            raise ValueError(f"unknown kv_dtype {self.kv_dtype!r}; valid names: {valid}")
        if not self.inflight_wait_seconds >= 0.0:
            raise ValueError(
                f"inflight_wait_seconds must be >= 0, got {self.inflight_wait_seconds!r}"
            )

    @property
    def disk_enabled(self) -> bool:
        return self.enabled and self.disk_path is not None and self.disk_bytes > 0

    @property
    def torch_kv_dtype(self) -> torch.dtype:
        """:attr:`kv_dtype` as a torch dtype."""
        return KV_DTYPES[self.kv_dtype]


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
