"""``stats().blocks_referenced``: the blocks in-flight requests hold, 0 once all released.

The soak (``benchmarks/soak.py``) reads this figure from ``/v1/cache/stats`` at
rest to prove no request path leaks a KV reference.
"""

from __future__ import annotations

from tests.prefix.helpers import make_cache, store

PROMPT = list(range(100, 126))  # 6 full blocks of 4, 2 tokens left over
OTHER = list(range(300, 316))  # 4 full blocks, disjoint from PROMPT


def test_blocks_referenced_counts_held_matches_and_returns_to_zero() -> None:
    cache = make_cache()
    store(cache, PROMPT)
    store(cache, OTHER)
    assert cache.stats().blocks_referenced == 0
    assert cache.stats().blocks_used == 10

    first = cache.match(PROMPT, salt="")
    assert first.num_blocks == 6
    assert cache.stats().blocks_referenced == 6

    # A second holder of the same blocks adds references, not referenced blocks.
    second = cache.match(PROMPT, salt="")
    other = cache.match(OTHER, salt="")
    assert cache.stats().blocks_referenced == 10

    cache.release(first)
    assert cache.stats().blocks_referenced == 10  # `second` still holds PROMPT's blocks
    cache.release(second)
    assert cache.stats().blocks_referenced == 4
    cache.release(other)
    cache.release(other)  # idempotent: no double decrement
    assert cache.stats().blocks_referenced == 0
    assert cache.blocks_in_use == 0


def test_a_miss_references_nothing() -> None:
    cache = make_cache()
    match = cache.match(PROMPT, salt="")
    try:
        assert match.num_tokens == 0
        assert cache.stats().blocks_referenced == 0
    finally:
        cache.release(match)
    assert cache.stats().blocks_referenced == 0
