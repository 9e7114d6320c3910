"""Budget, eviction order and explicit-breakpoint pins (TTL on a fake clock)."""

from __future__ import annotations

import pytest

from tests.prefix.helpers import FakeClock, hit_tokens, kv_for, make_cache, store

A = list(range(10, 18))  # 2 blocks
B = list(range(20, 28))
C = list(range(30, 38))
D = list(range(40, 48))
E = list(range(50, 58))


def test_lru_evicts_the_least_recently_used_prefix() -> None:
    cache = make_cache(budget_blocks=4)
    store(cache, A)
    store(cache, B)
    assert hit_tokens(cache, A) == 8  # A is now more recent than B
    match = cache.match(C, salt="")
    report = cache.commit(match, C, kv_for(C))
    cache.release(match)
    assert report.blocks_evicted == 2
    assert (hit_tokens(cache, A), hit_tokens(cache, B), hit_tokens(cache, C)) == (8, 0, 8)
    assert cache.stats().evictions == 2
    assert cache.stats().blocks_used == 4


def test_referenced_blocks_are_never_evicted_and_what_fits_is_stored() -> None:
    cache = make_cache(budget_blocks=4)
    store(cache, A)
    held = cache.match(A, salt="")
    longer = list(range(60, 72))  # 3 blocks, only 2 slots are evictable or free
    match = cache.match(longer, salt="")
    report = cache.commit(match, longer, kv_for(longer))
    cache.release(match)
    assert (report.tokens_written, report.tokens_not_stored) == (8, 4)
    assert hit_tokens(cache, longer) == 8
    assert hit_tokens(cache, A) == 8  # A was held, so the new prompt could not evict it
    cache.release(held)


def test_fifo_evicts_the_oldest_block_and_its_unreachable_descendants() -> None:
    cache = make_cache(budget_blocks=3, min_cache_tokens=4, eviction="fifo")
    long_prompt = list(range(12))
    store(cache, long_prompt)
    assert hit_tokens(cache, long_prompt) == 12
    match = cache.match([99, 98, 97, 96], salt="")
    report = cache.commit(match, [99, 98, 97, 96], kv_for([99, 98, 97, 96]))
    cache.release(match)
    # The oldest block is block 0 of the long prompt: its descendants go with it.
    assert report.blocks_evicted == 3
    assert cache.stats().blocks_used == 1
    assert hit_tokens(cache, long_prompt) == 0


def test_pinned_blocks_survive_pressure_until_their_ttl_expires() -> None:
    clock = FakeClock()
    cache = make_cache(budget_blocks=4, clock=clock)
    match = cache.match(A, salt="")
    report = cache.commit(match, A, kv_for(A), pins=[(8, "5m")])
    cache.release(match)
    assert report.pinned == ((8, "5m"),)
    store(cache, B)
    store(cache, C)  # must evict B, not the older but pinned A
    assert (hit_tokens(cache, A), hit_tokens(cache, B), hit_tokens(cache, C)) == (8, 0, 8)
    assert cache.stats().blocks_pinned == 2

    clock.advance(301)
    assert cache.stats().blocks_pinned == 0
    store(cache, D)
    store(cache, E)
    assert hit_tokens(cache, A) == 0


def test_every_hit_refreshes_the_pin() -> None:
    clock = FakeClock()
    cache = make_cache(clock=clock)
    store(cache, A, pins=[(8, "5m")])
    clock.advance(200)
    assert hit_tokens(cache, A) == 8
    clock.advance(250)  # 450 s after the write, 250 s after the hit
    assert cache.stats().blocks_pinned == 2
    clock.advance(100)
    assert cache.stats().blocks_pinned == 0


def test_a_shorter_pin_never_shortens_a_longer_one() -> None:
    clock = FakeClock()
    cache = make_cache(clock=clock)
    store(cache, A, pins=[(8, "1h")])
    clock.advance(10)
    assert store(cache, A, pins=[(8, "5m")]) == 8
    clock.advance(1000)
    assert cache.stats().blocks_pinned == 2
    assert hit_tokens(cache, A) == 8  # refreshed by its 1h TTL
    clock.advance(3599)
    assert cache.stats().blocks_pinned == 2


def test_pin_over_the_cap_is_refused_and_reported() -> None:
    cache = make_cache(budget_blocks=8, max_pinned_fraction=0.25)
    prompt = list(range(12))  # 3 blocks; the cap is 2 pinned blocks
    match = cache.match(prompt, salt="")
    report = cache.commit(match, prompt, kv_for(prompt), pins=[(12, "5m"), (9, "1h")])
    cache.release(match)
    assert report.pinned == ((8, "1h"),)
    assert report.pins_refused == ((12, "5m"),)
    assert cache.stats().blocks_pinned == 2
    assert hit_tokens(cache, prompt) == 12  # still cached, just not pinned past 8


def test_pins_on_uncached_prefixes_are_reported_not_applied() -> None:
    cache = make_cache(budget_blocks=3)
    prompt = list(range(20))  # 5 blocks, 3 fit
    match = cache.match(prompt, salt="")
    report = cache.commit(match, prompt, kv_for(prompt), pins=[(5, "1h"), (20, "5m")])
    cache.release(match)
    assert report.pinned == ()
    assert report.pins_uncached == ((4, "1h"), (20, "5m"))
    assert cache.stats().blocks_pinned == 0


def test_pin_past_the_prompt_end_covers_the_whole_prompt() -> None:
    cache = make_cache()
    match = cache.match([*A, 1, 2], salt="")
    report = cache.commit(match, [*A, 1, 2], kv_for([*A, 1, 2]), pins=[(40, "5m")])
    cache.release(match)
    assert report.pinned == ((8, "5m"),)


def test_pin_on_an_already_cached_prefix_pins_it() -> None:
    cache = make_cache()
    store(cache, A)
    match = cache.match(A, salt="")
    report = cache.commit(match, A, kv_for(A), pins=[(8, "5m")])
    cache.release(match)
    assert (report.tokens_written, report.pinned) == (0, ((8, "5m"),))
    assert cache.stats().blocks_pinned == 2


def test_pinned_blocks_fill_the_budget_then_new_prompts_are_not_stored() -> None:
    cache = make_cache(budget_blocks=4, max_pinned_fraction=1.0)
    store(cache, A, pins=[(8, "5m")])
    store(cache, B, pins=[(8, "5m")])
    match = cache.match(C, salt="")
    report = cache.commit(match, C, kv_for(C))
    cache.release(match)
    assert (report.tokens_written, report.tokens_not_stored, report.blocks_evicted) == (0, 8, 0)


def test_unknown_ttl_is_rejected_and_releases_everything() -> None:
    cache = make_cache()
    match = cache.match(A, salt="")
    try:
        with pytest.raises(ValueError, match="unknown cache TTL '10m'"):
            cache.commit(match, A, kv_for(A), pins=[(8, "10m")])  # type: ignore[list-item]
    finally:
        cache.release(match)
    assert (cache.blocks_in_use, cache.claims_in_flight) == (0, 0)
    assert cache.stats().blocks_used == 0
