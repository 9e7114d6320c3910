"""The prefix cache's configuration, validated on construction (ValueError names the fix)."""

from __future__ import annotations

from dataclasses import dataclass

from promptcache.prefix.eviction import EVICTION_POLICIES


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
        if not self.inflight_wait_seconds >= 0.0:
            raise ValueError(
                f"inflight_wait_seconds must be >= 0, got {self.inflight_wait_seconds!r}"
            )


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
