"""Property test: whatever the history, a hit returns exactly that prefix's KV."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptcache.prefix import PrefixCache, pool
from tests.prefix.helpers import BLOCK_BYTES, FakeClock, empty_out, kv_for, make_cache, prefix_tag

BUDGET_BLOCKS = 6

# Prompts over a two-letter alphabet share prefixes (and whole blocks) often.
prompts = st.lists(st.integers(min_value=0, max_value=1), min_size=0, max_size=28)
operations = st.lists(
    st.tuples(
        prompts,
        st.sampled_from(["", "t"]),
        st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["5m", "1h"])), max_size=2),
        st.sampled_from([0.0, 100.0, 400.0]),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


def _check_hit(cache: PrefixCache, tokens: list[int], salt: str) -> int:
    match = cache.match(tokens, salt=salt)
    try:
        out = empty_out(max(len(tokens), 1))
        cache.gather(match, out)
        for position in range(match.num_tokens):
            assert out[0, 0, 0, position, 0].item() == prefix_tag(tokens[: position + 1])
        return match.num_tokens
    finally:
        cache.release(match)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_hits_are_exact_and_bookkeeping_stays_consistent(
    ops: list[tuple[list[int], str, list[tuple[int, str]], float, bool]],
) -> None:
    clock = FakeClock()
    with pytest.MonkeyPatch.context() as patch:
        # Two blocks per storage chunk: prompts straddle chunks and reuse scattered slots.
        patch.setattr(pool, "DEFAULT_CHUNK_BYTES", 2 * BLOCK_BYTES)
        cache = make_cache(budget_blocks=BUDGET_BLOCKS, max_pinned_fraction=0.5, clock=clock)
    assert cache._pool.blocks_per_chunk == 2
    for tokens, salt, pins, advance, clear in ops:
        clock.advance(advance)
        match = cache.match(tokens, salt=salt)
        try:
            report = cache.commit(match, tokens, kv_for(tokens), pins=pins)  # type: ignore[arg-type]
        finally:
            cache.release(match)
        assert report.tokens_written % 4 == 0
        hit = _check_hit(cache, tokens, salt)
        # What was just stored (or already there) is found again, unless it did not fit.
        if len(tokens) >= 8 and report.tokens_not_stored == 0:
            assert hit == len(tokens) // 4 * 4
        stats = cache.stats()
        assert stats.blocks_used <= BUDGET_BLOCKS
        assert stats.blocks_pinned <= BUDGET_BLOCKS // 2
        assert (cache.blocks_in_use, cache.claims_in_flight) == (0, 0)
        if clear:
            cache.clear()
            assert cache.stats().blocks_used == 0
