"""Shared helpers for prefix-cache tests: a tiny KV layout, a fake clock, prefix-tagged KV."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from promptcache.prefix import BasePrefixCache, KVLayout, PrefixCache, PrefixCacheConfig

LAYOUT = KVLayout(num_layers=2, num_kv_heads=1, head_dim=4)
BLOCK = 4
BLOCK_BYTES = BLOCK * LAYOUT.bytes_per_token


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_cache(
    *,
    budget_blocks: int = 64,
    min_cache_tokens: int = 8,
    clock: FakeClock | None = None,
    **overrides: object,
) -> PrefixCache:
    config = PrefixCacheConfig(
        block_size=BLOCK,
        kv_cache_bytes=budget_blocks * BLOCK_BYTES,
        min_cache_tokens=min_cache_tokens,
        **overrides,  # type: ignore[arg-type]
    )
    return PrefixCache(config, LAYOUT, model_id="tiny", clock=clock or FakeClock())


def prefix_tag(tokens: Sequence[int]) -> float:
    """A float exactly representable in float32 that identifies the whole prefix ``tokens``.

    Real KV at position p depends on every token up to p; tagging position p
    with this value lets a test tell whether gathered KV came from this very
    prefix or from another prompt's block.
    """
    value = 7
    for token in tokens:
        value = (value * 31 + token + 1) % 1_000_003
    return float(value)


def kv_for(tokens: Sequence[int], *, capacity: int | None = None) -> torch.Tensor:
    """A KV buffer whose position p holds ``prefix_tag(tokens[:p+1])`` (+ layer/kv/dim offsets)."""
    capacity = capacity if capacity is not None else len(tokens)
    kv = torch.zeros(
        (LAYOUT.num_layers, 2, LAYOUT.num_kv_heads, capacity, LAYOUT.head_dim),
        dtype=LAYOUT.dtype,
    )
    offsets = torch.arange(LAYOUT.num_layers * 2 * LAYOUT.head_dim, dtype=LAYOUT.dtype).reshape(
        LAYOUT.num_layers, 2, 1, 1, LAYOUT.head_dim
    )
    for position in range(len(tokens)):
        kv[:, :, :, position, :] = prefix_tag(tokens[: position + 1])
    return kv + offsets * 1e-3 * (kv != 0)


def empty_out(capacity: int) -> torch.Tensor:
    return torch.full(
        (LAYOUT.num_layers, 2, LAYOUT.num_kv_heads, capacity, LAYOUT.head_dim), float("nan")
    )


def store(
    cache: BasePrefixCache,
    tokens: Sequence[int],
    *,
    salt: str = "",
    pins: Sequence[tuple[int, str]] = (),
) -> int:
    """Run one request's cache protocol (match, gather, commit, release); returns the hit."""
    match = cache.match(tokens, salt=salt)
    try:
        out = empty_out(len(tokens))
        cache.gather(match, out)
        cache.commit(match, tokens, kv_for(tokens), pins=pins)  # type: ignore[arg-type]
        return match.num_tokens
    finally:
        cache.release(match)


def hit_tokens(cache: BasePrefixCache, tokens: Sequence[int], *, salt: str = "") -> int:
    """How many tokens of ``tokens`` are cached now (a match released at once)."""
    match = cache.match(tokens, salt=salt)
    cache.release(match)
    return match.num_tokens
