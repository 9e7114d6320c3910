from __future__ import annotations

import pytest

from promptcache.prefix.eviction import FIFOPolicy, LRUPolicy, make_eviction_policy


def _drain(policy: LRUPolicy | FIFOPolicy) -> list[int]:
    order = []
    while (key := policy.pop_victim()) is not None:
        order.append(key)
    return order


def test_lru_evicts_least_recently_added_and_readding_refreshes() -> None:
    policy = LRUPolicy()
    for key in (3, 1, 2):
        policy.add(key)
    policy.add(3)
    policy.discard(2)
    policy.discard(42)
    assert len(policy) == 2
    assert _drain(policy) == [1, 3]
    assert policy.pop_victim() is None


def test_fifo_evicts_oldest_serial_whatever_the_access_order() -> None:
    policy = FIFOPolicy()
    for key in (5, 2, 9, 7):
        policy.add(key)
    policy.discard(2)
    policy.add(2)
    policy.add(5)
    policy.discard(9)
    assert len(policy) == 3
    assert _drain(policy) == [2, 5, 7]


def test_fifo_stays_small_under_churn() -> None:
    policy = FIFOPolicy()
    for _ in range(1000):
        policy.add(1)
        policy.discard(1)
    assert len(policy._heap) < 100


def test_unknown_policy_lists_valid_names() -> None:
    assert make_eviction_policy("lru").name == "lru"
    with pytest.raises(ValueError, match="valid names: fifo, lru"):
        make_eviction_policy("random")
