"""The replica ring and the affinity key: the same choice on every gateway, bounded loads."""

from __future__ import annotations

from collections import Counter

import pytest

from promptcache.engine.upstream.affinity import affinity_key, prefix_material
from promptcache.engine.upstream.replicas import replica_id
from promptcache.engine.upstream.ring import HashRing, bounded_capacity
from promptcache.request import CacheControl, ChatRequest, Message, TextBlock, Tool, Transport

URLS = [replica_id(f"http://10.0.0.{i}:8000/v1") for i in range(1, 6)]
KEYS = [int.from_bytes(i.to_bytes(4, "big") * 2, "big") * 2654435761 % 2**64 for i in range(2000)]


def _owner(ring: HashRing, key: int) -> str:
    return ring.ids[next(ring.walk(key))]


def _request(
    system: str, question: str, *, tenant: str = "", marker: bool = False, **transport: str
) -> ChatRequest:
    mark = CacheControl() if marker else None
    return ChatRequest(
        model="m",
        system=(TextBlock(text=system, cache_control=mark),),
        messages=(Message(role="user", content=(TextBlock(text=question),)),),
        tenant=tenant,
        transport=Transport(**transport),  # type: ignore[arg-type]
    )


def test_two_rings_built_apart_agree_whatever_the_url_order() -> None:
    first = HashRing(URLS)
    second = HashRing(list(reversed(URLS)))
    assert all(_owner(first, k) == _owner(second, k) for k in KEYS)


def test_keys_spread_over_every_replica() -> None:
    ring = HashRing(URLS)
    counts = Counter(_owner(ring, k) for k in KEYS)
    assert set(counts) == set(URLS)
    assert min(counts.values()) > len(KEYS) / len(URLS) / 2


def test_removing_a_replica_moves_only_its_keys() -> None:
    full = HashRing(URLS)
    without = HashRing([u for u in URLS if u != URLS[2]])
    moved = [k for k in KEYS if _owner(full, k) != _owner(without, k)]
    assert moved
    assert all(_owner(full, k) == URLS[2] for k in moved)
    # Marking it unavailable on the full ring gives the same answer as rebuilding without it.
    available = [u != URLS[2] for u in URLS]
    loads = [0] * len(URLS)
    for k in KEYS[:300]:
        choice = full.ids[full.choose(k, loads=loads, available=available)[0]]
        assert choice == _owner(without, k)


def test_bounded_load_moves_overflow_to_the_next_replica_of_the_ring() -> None:
    ring = HashRing(URLS)
    key = KEYS[7]
    walk = list(ring.walk(key))
    loads = [0] * len(URLS)
    available = [True] * len(URLS)
    assert ring.choose(key, loads=loads, available=available)[0] == walk[0]
    # The ring's replica holds 2 of 2 in flight: ceil(1.25 * 3 / 5) = 1 -> next on the ring.
    loads[walk[0]] = 2
    order = ring.choose(key, loads=loads, available=available, load_factor=1.25)
    assert order[0] == walk[1]
    assert sorted(order) == list(range(len(URLS)))
    # A generous factor keeps the affinity: ceil(3 * 3 / 5) = 2 ... still at the bound;
    # ceil(4 * 3 / 5) = 3 > 2.
    assert ring.choose(key, loads=loads, available=available, load_factor=4.0)[0] == walk[0]


def test_no_replica_ever_holds_more_than_the_bound() -> None:
    ring = HashRing(URLS)
    loads = [0] * len(URLS)
    available = [True] * len(URLS)
    for placed in range(200):  # one hot key, 200 requests in flight at once
        capacity = bounded_capacity(placed, len(URLS), 1.25)
        chosen = ring.choose(KEYS[0], loads=loads, available=available, load_factor=1.25)[0]
        loads[chosen] += 1
        assert loads[chosen] <= capacity
    # The bound caps the busiest replica at 1.25 x the mean (50 of 200 over 5), so
    # the hot key fills replicas in ring order rather than piling onto one.
    assert max(loads) == 50
    assert sum(1 for load in loads if load) == 4


def test_nothing_available_gives_an_empty_order() -> None:
    ring = HashRing(URLS)
    assert ring.choose(1, loads=[0] * 5, available=[False] * 5) == []


def test_ring_and_load_factor_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="distinct"):
        HashRing([URLS[0], URLS[0]])
    with pytest.raises(ValueError, match="load factor"):
        bounded_capacity(0, 3, 1.0)
    with pytest.raises(ValueError, match="replica URL"):
        replica_id("ftp://host/v1")


def test_replica_id_drops_credentials_and_normalises() -> None:
    assert replica_id("http://user:secret@Host.Example:8001/v1/") == "http://host.example:8001/v1"
    assert replica_id("https://h/v1") == "https://h:443/v1"


def test_affinity_key_follows_the_long_prefix_not_the_question() -> None:
    document = "A long shared system prompt. " * 300  # ~9 KB: past the routing depth
    a = affinity_key(_request(document, "first question?"))
    b = affinity_key(_request(document, "a different question"))
    assert a == b
    assert affinity_key(_request("Another document. " * 300, "first question?")) != a


def test_affinity_key_ignores_cache_markers_and_separates_tenants() -> None:
    document = "Shared context. " * 400
    plain = affinity_key(_request(document, "q"))
    assert affinity_key(_request(document, "q", marker=True)) == plain
    assert affinity_key(_request(document, "q", tenant="t2")) != plain


def test_short_prompts_key_on_everything_they_have() -> None:
    assert affinity_key(_request("be brief", "q1")) != affinity_key(_request("be brief", "q2"))


def test_prompt_cache_key_routes_instead_of_the_prefix() -> None:
    a = affinity_key(_request("one", "x", prompt_cache_key="user-42"))
    b = affinity_key(_request("two", "y", prompt_cache_key="user-42"))
    assert a == b
    assert a != affinity_key(_request("one", "x", prompt_cache_key="user-43"))
    other_tenant = _request("one", "x", tenant="t2", prompt_cache_key="user-42")
    assert affinity_key(other_tenant) != a


def test_prefix_material_is_tools_then_system_then_first_message() -> None:
    request = ChatRequest(
        model="m",
        tools=(Tool(name="lookup", cache_control=CacheControl()),),
        system=(TextBlock(text="SYSTEM"),),
        messages=(
            Message(role="user", content=(TextBlock(text="FIRST"),)),
            Message(role="assistant", content=(TextBlock(text="LATER"),)),
        ),
    )
    text = prefix_material(request).decode()
    assert text.index("lookup") < text.index("SYSTEM") < text.index("FIRST")
    assert "LATER" not in text and "ephemeral" not in text


def test_below_the_minimum_load_a_key_stays_on_its_replica() -> None:
    """2 in flight over 3 replicas: the formula alone caps each at 1 and moves a prefix's
    second concurrent request; with a floor of 4 it stays where its KV is, and the bound
    bites again once the floor is passed."""
    ring = HashRing(URLS[:3])
    key = KEYS[0]
    home = next(ring.walk(key))
    loads = [0, 0, 0]
    loads[home] = 1
    available = [True, True, True]
    assert ring.choose(key, loads=loads, available=available)[0] != home
    assert ring.choose(key, loads=loads, available=available, min_load=4)[0] == home
    loads[home] = 4
    assert ring.choose(key, loads=loads, available=available, min_load=4)[0] != home
    assert bounded_capacity(1, 3, 1.25, min_load=4) == 4
    assert bounded_capacity(30, 3, 1.25, min_load=4) == 13
