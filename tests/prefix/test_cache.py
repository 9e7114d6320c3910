from __future__ import annotations

import pytest
import torch

from promptcache.prefix import PrefixCacheConfig, hashing
from promptcache.prefix.hashing import BlockHash
from tests.prefix.helpers import (
    BLOCK,
    BLOCK_BYTES,
    empty_out,
    hit_tokens,
    kv_for,
    make_cache,
    store,
)

PROMPT = list(range(100, 126))  # 26 tokens: 6 full blocks of 4 and a partial one


def test_miss_then_hit_of_every_full_block() -> None:
    cache = make_cache()
    assert store(cache, PROMPT) == 0
    assert hit_tokens(cache, PROMPT) == 24
    assert hit_tokens(cache, [*PROMPT, 7, 8, 9]) == 24  # block 6 was partial: not cached


def test_gather_returns_exactly_the_committed_values() -> None:
    cache = make_cache()
    store(cache, PROMPT)
    longer = [*PROMPT[:20], 1, 2, 3, 4, 5]
    match = cache.match(longer, salt="")
    try:
        assert match.num_tokens == 20
        out = empty_out(len(longer) + 3)
        cache.gather(match, out)
        expected = kv_for(PROMPT)
        assert torch.equal(out[:, :, :, :20, :], expected[:, :, :, :20, :])
        assert torch.isnan(out[:, :, :, 20:, :]).all()  # nothing written past the match
    finally:
        cache.release(match)


def test_longest_prefix_is_reused_across_diverging_prompts() -> None:
    cache = make_cache()
    store(cache, PROMPT)
    diverging = [*PROMPT[:13], 999, *PROMPT[14:]]  # differs inside block 3
    assert store(cache, diverging) == 12
    # Both branches now share blocks 0-2 and each has its own tail.
    assert hit_tokens(cache, PROMPT) == 24
    assert hit_tokens(cache, diverging) == 24
    assert cache.stats().blocks_used == 6 + 3


def test_no_lookback_limit_on_a_long_prompt() -> None:
    cache = make_cache(budget_blocks=200)
    long_prompt = list(range(600))
    store(cache, long_prompt)
    assert hit_tokens(cache, [*long_prompt[:597], 1, 2, 3, 4]) == 596


def test_other_salt_never_hits() -> None:
    cache = make_cache()
    store(cache, PROMPT, salt="tenant-a")
    assert hit_tokens(cache, PROMPT, salt="tenant-b") == 0
    assert hit_tokens(cache, PROMPT, salt="") == 0
    assert hit_tokens(cache, PROMPT, salt="tenant-a") == 24


def test_forged_hash_collision_is_rejected_by_token_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    real = hashing.hash_block_tokens

    def parity_hash(
        parent: BlockHash, token_ids: object, extra_keys: tuple[object, ...] = ()
    ) -> BlockHash:
        # Tokens of equal parity collide: a weak hash that forges collisions.
        return real(parent, [t % 2 for t in token_ids], extra_keys)  # type: ignore[attr-defined]

    monkeypatch.setattr(hashing, "hash_block_tokens", parity_hash)
    cache = make_cache()
    first = [2 * i for i in range(24)]
    store(cache, first)
    forged = [*first[:8], *(t + 2 for t in first[8:])]  # same hashes, other tokens after 8
    assert hashing.hash_prompt_blocks(
        forged, block_size=BLOCK, root=hashing.root_hash("tiny", "")
    ) == hashing.hash_prompt_blocks(first, block_size=BLOCK, root=hashing.root_hash("tiny", ""))
    match = cache.match(forged, salt="")
    try:
        assert match.num_tokens == 8
        # Its own blocks replace the stranger's under the colliding hashes.
        report = cache.commit(match, forged, kv_for(forged))
        assert report.tokens_written == 16
    finally:
        cache.release(match)
    again = cache.match(forged, salt="")
    out = empty_out(24)
    cache.gather(again, out)
    cache.release(again)
    assert again.num_tokens == 24
    assert torch.equal(out, kv_for(forged))
    assert hit_tokens(cache, first) == 8


def test_min_cache_tokens_gates_reads_and_writes() -> None:
    cache = make_cache(min_cache_tokens=12)
    short = PROMPT[:11]  # 2 full blocks = 8 tokens < 12
    match = cache.match(short, salt="")
    report = cache.commit(match, short, kv_for(short))
    cache.release(match)
    assert report.tokens_written == 0
    assert cache.stats().blocks_used == 0

    store(cache, PROMPT)
    # 8 cached tokens would be below the minimum: not read.
    assert hit_tokens(cache, [*PROMPT[:8], 0, 0, 0, 0, 0]) == 0
    assert hit_tokens(cache, [*PROMPT[:12], 0]) == 12


def test_prompt_extended_with_generated_tokens_is_committed_too() -> None:
    cache = make_cache()
    match = cache.match(PROMPT, salt="")
    generated = [*PROMPT, 1, 2, 3, 4, 5, 6]
    report = cache.commit(match, generated, kv_for(generated))
    cache.release(match)
    assert report.tokens_written == 32
    assert hit_tokens(cache, generated) == 32


def test_commit_rejects_tokens_that_do_not_extend_the_match() -> None:
    cache = make_cache()
    store(cache, PROMPT)
    match = cache.match(PROMPT, salt="")
    try:
        with pytest.raises(ValueError, match="do not start with the matched prompt"):
            cache.commit(match, [0, *PROMPT[1:]], kv_for(PROMPT))
    finally:
        cache.release(match)
    assert cache.blocks_in_use == 0
    assert cache.claims_in_flight == 0


def test_handle_misuse_is_an_error() -> None:
    cache = make_cache()
    match = cache.match(PROMPT, salt="")
    cache.commit(match, PROMPT, kv_for(PROMPT))
    with pytest.raises(RuntimeError, match="twice"):
        cache.commit(match, PROMPT, kv_for(PROMPT))
    cache.release(match)
    cache.release(match)  # idempotent
    with pytest.raises(RuntimeError, match="released"):
        cache.gather(match, empty_out(26))
    with pytest.raises(RuntimeError, match="released"):
        cache.commit(match, PROMPT, kv_for(PROMPT))


def test_refcounts_return_to_zero_after_release_even_on_error() -> None:
    cache = make_cache()
    store(cache, PROMPT)
    match = cache.match(PROMPT, salt="")
    assert cache.blocks_in_use == 6
    try:
        with pytest.raises(ValueError, match="kv must have shape"):
            cache.commit(match, [*PROMPT, *range(8)], torch.zeros(1, 2, 3, 4, 5))
    finally:
        cache.release(match)
    assert cache.blocks_in_use == 0
    assert cache.claims_in_flight == 0
    with pytest.raises(ValueError, match="out must have shape"):
        probe = cache.match(PROMPT, salt="")
        try:
            cache.gather(probe, torch.zeros(2, 2, 1, 26, 3))
        finally:
            cache.release(probe)
    assert cache.blocks_in_use == 0


def test_stats_count_queries_hits_and_bytes() -> None:
    cache = make_cache(budget_blocks=10)
    store(cache, PROMPT)
    hit_tokens(cache, PROMPT)
    hit_tokens(cache, [1, 2, 3])
    stats = cache.stats()
    assert stats.tokens_queried == 26 + 26 + 3
    assert stats.tokens_hit == 24
    assert stats.blocks_used == 6
    assert stats.kv_bytes_used == 6 * BLOCK_BYTES
    assert stats.kv_bytes_budget == 10 * BLOCK_BYTES
    assert (stats.blocks_pinned, stats.kv_bytes_pinned, stats.evictions) == (0, 0, 0)


def test_clear_drops_unreferenced_blocks_and_keeps_those_in_use() -> None:
    cache = make_cache()
    store(cache, PROMPT, pins=[(24, "1h")])
    other = list(range(500, 512))
    store(cache, other)
    held = cache.match(other, salt="")
    cache.clear()
    assert cache.stats().blocks_used == 3
    assert cache.stats().evictions == 0
    out = empty_out(12)
    cache.gather(held, out)
    assert torch.equal(out, kv_for(other))
    cache.release(held)
    cache.clear()
    assert cache.stats().blocks_used == 0
    assert hit_tokens(cache, PROMPT) == 0
    assert store(cache, PROMPT) == 0
    assert hit_tokens(cache, PROMPT) == 24


def test_disabled_cache_never_reads_or_writes() -> None:
    cache = make_cache(enabled=False)
    store(cache, PROMPT)
    assert hit_tokens(cache, PROMPT) == 0
    assert cache.stats().blocks_used == 0
    assert cache.claims_in_flight == 0


def test_budget_below_one_block_stores_nothing_and_says_so() -> None:
    cache = make_cache(budget_blocks=0)
    match = cache.match(PROMPT, salt="")
    report = cache.commit(match, PROMPT, kv_for(PROMPT))
    cache.release(match)
    assert report.tokens_written == 0
    assert report.tokens_not_stored == 24


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_size": 0}, "block_size must be an integer >= 1"),
        ({"block_size": 2.5}, "block_size must be an integer"),
        ({"kv_cache_bytes": -1}, "kv_cache_bytes must be an integer >= 0"),
        ({"min_cache_tokens": -5}, "min_cache_tokens"),
        ({"max_pinned_fraction": 1.5}, "max_pinned_fraction must be within 0..1"),
        ({"max_pinned_fraction": float("nan")}, "max_pinned_fraction"),
        ({"eviction": "mru"}, "unknown eviction policy 'mru'; valid names: fifo, lru"),
        ({"inflight_wait_seconds": -1.0}, "inflight_wait_seconds must be >= 0"),
        ({"enabled": True, "block_size": True}, "block_size"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrefixCacheConfig(**kwargs)  # type: ignore[arg-type]


def test_default_config_matches_the_spec() -> None:
    config = PrefixCacheConfig()
    assert config.block_size == 16
    assert config.kv_cache_bytes == 1 << 30
    assert config.min_cache_tokens == 1024
    assert config.eviction == "lru"
    assert config.enabled
