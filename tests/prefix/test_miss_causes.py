"""Why a prompt's blocks were not read: cold, changed, evicted, expired, tenant, below minimum."""

from __future__ import annotations

from promptcache.prefix import PrefixCache
from tests.prefix.helpers import FakeClock, kv_for, make_cache, store

A = list(range(10, 18))  # 2 blocks
B = list(range(20, 28))
C = list(range(30, 38))


def miss(cache: PrefixCache, tokens: list[int], salt: str = "") -> tuple[str | None, int]:
    match = cache.match(tokens, salt=salt)
    cache.release(match)
    return match.miss, match.diverged_block


def test_cold_then_full_hit_then_changed_after_the_cached_prefix() -> None:
    cache = make_cache(min_cache_tokens=4)
    assert miss(cache, A) == ("cold", 0)
    store(cache, A)
    assert miss(cache, A) == (None, 2)
    assert miss(cache, [*A, 1, 2, 3, 4]) == ("cold", 2)  # longer: never seen past A
    assert miss(cache, [*A[:4], 9, 9, 9, 9, *A]) == ("changed", 1)


def test_another_tenants_first_block_is_tenant() -> None:
    cache = make_cache()
    store(cache, A)
    assert miss(cache, A, salt="other") == ("tenant", 0)


def test_evicted_and_expired_blocks_are_remembered() -> None:
    clock = FakeClock()
    cache = make_cache(budget_blocks=4, clock=clock)
    match = cache.match(A, salt="")
    cache.commit(match, A, kv_for(A), pins=[(8, "5m")])
    cache.release(match)
    store(cache, B)
    clock.advance(301)
    cache.stats()  # expires the pin
    store(cache, C)  # the budget is full: A (pin ran out) and then B go
    store(cache, [*range(60, 68)])
    assert miss(cache, A) == ("expired", 0)
    assert miss(cache, B) == ("evicted", 0)


def test_below_minimum() -> None:
    cache = make_cache(min_cache_tokens=8)
    assert miss(cache, A[:4]) == ("below_minimum", 0)
    store(cache, A)
    assert miss(cache, [*A[:4], 1, 1, 1, 1]) == ("below_minimum", 1)
