"""Named, pinned prefixes on the local engine (tiny model): the boundary, the hit a later
request reports, TTLs on an injected clock, eviction pressure, the pin cap and tenants."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.local.named_prefixes import PrefixCancelled
from promptcache.errors import RequestError
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import (
    CacheControl,
    ChatRequest,
    Message,
    SamplingParams,
    TextBlock,
    Tool,
)
from promptcache.result import Result, Usage

BLOCK = 4
CONFIG = PrefixCacheConfig(block_size=BLOCK, min_cache_tokens=16, kv_cache_bytes=8 << 20)
DOCUMENT = " ".join(f"clause {i} says {i * 7 % 13}." for i in range(20))


class WallClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def engine(tiny_model: Any, clock: WallClock) -> LocalEngine:
    return LocalEngine(
        LocalEngineConfig(prefix_cache=CONFIG), loaded=tiny_model, prefix_clock=clock
    )


def prefix(
    *, system: str = DOCUMENT, turns: tuple[str, ...] = ("Read it.",), tenant: str = ""
) -> ChatRequest:
    roles = ("user", "assistant")
    return ChatRequest(
        model="tiny",
        system=(TextBlock(text=system),) if system else (),
        messages=tuple(
            Message(role=roles[i % 2], content=(TextBlock(text=text),))  # type: ignore[arg-type]
            for i, text in enumerate(turns)
        ),
        tools=(Tool(name="lookup", description="Find a clause."),),
        tenant=tenant,
    )


def follow_up(base: ChatRequest, *more: str) -> ChatRequest:
    roles = ("user", "assistant")
    start = len(base.messages)
    added = tuple(
        Message(role=roles[(start + i) % 2], content=(TextBlock(text=t),))  # type: ignore[arg-type]
        for i, t in enumerate(more)
    )
    return ChatRequest(
        model=base.model,
        system=base.system,
        tools=base.tools,
        messages=base.messages + added,
        sampling=SamplingParams(max_tokens=2),
        tenant=base.tenant,
    )


def usage(engine: LocalEngine, request: ChatRequest) -> Usage:
    result = list(engine.generate(request))[-1]
    assert isinstance(result, Result)
    return result.usage


def pin(engine: LocalEngine, request: ChatRequest, ttl: float = 600.0) -> Any:
    return engine.pin_prefix(request, ttl_seconds=ttl, name=None, model="tiny")


def test_the_prefix_ends_where_a_longer_conversation_continues(engine: LocalEngine) -> None:
    base = prefix(turns=("Read it.", "Done.", "Now the summary."))
    tokens = engine._pinner.prefix_tokens(base)
    longer = engine.renderer.render(follow_up(base, "ok", "And the title?")).token_ids
    assert longer[: len(tokens)] == tokens
    assert len(longer) > len(tokens) + 8  # the end-of-turn and the new turns come after
    system_only = engine._pinner.prefix_tokens(prefix(turns=()))
    assert longer[: len(system_only)] == system_only
    assert len(system_only) < len(tokens)


def test_a_pinned_prefix_is_read_by_a_request_that_continues_it(engine: LocalEngine) -> None:
    base = prefix()
    pinned = pin(engine, base)
    assert pinned.id.startswith("pfx_")
    assert pinned.cached_tokens == pinned.tokens // BLOCK * BLOCK > 0
    assert engine.prefix_stats().blocks_pinned == pinned.cached_tokens // BLOCK
    assert usage(
        engine, follow_up(base, "Thanks.", "What does clause 3 say?")
    ).cache_read_input_tokens == (pinned.cached_tokens)
    assert engine.prefix_cache.blocks_in_use == 0  # held by pins, not references


def test_pinning_the_same_prefix_twice_reuses_the_blocks(engine: LocalEngine) -> None:
    first, second = pin(engine, prefix()), pin(engine, prefix())
    assert first.id != second.id and first.cached_tokens == second.cached_tokens
    assert engine.prefix_stats().blocks_pinned == first.cached_tokens // BLOCK
    registry = engine.named_prefixes
    assert registry is not None
    registry.remove("", first.id)
    assert engine.prefix_stats().blocks_pinned == second.cached_tokens // BLOCK  # still held
    registry.remove("", second.id)
    assert engine.prefix_stats().blocks_pinned == 0


def test_ttl_runs_out_on_the_clock_and_can_be_changed(
    engine: LocalEngine, clock: WallClock
) -> None:
    registry = engine.named_prefixes
    assert registry is not None
    pinned = pin(engine, prefix(), ttl=60)
    assert pinned.expires_at == clock.now + 60
    clock.now += 59
    longer = registry.retime("", pinned.id, 120)
    assert longer is not None and longer.expires_at == clock.now + 120
    clock.now += 119
    assert [p.id for p in registry.list("")] == [pinned.id]
    clock.now += 1
    assert registry.list("") == [] and registry.get("", pinned.id) is None
    assert engine.prefix_stats().blocks_pinned == 0
    again = pin(engine, prefix(), ttl=600)
    shorter = registry.retime("", again.id, 5)
    assert shorter is not None and shorter.expires_at == clock.now + 5
    clock.now += 5
    assert engine.prefix_stats().blocks_pinned == 0


def test_pins_survive_eviction_pressure(tiny_model: Any) -> None:
    # Room for ~3 prompts' blocks (one is ~180): the flood below evicts all not pinned.
    block_bytes = LocalEngine(loaded=tiny_model).prefix_cache.block_bytes // 16 * BLOCK
    small = PrefixCacheConfig(
        block_size=BLOCK, min_cache_tokens=16, kv_cache_bytes=600 * block_bytes
    )
    engine = LocalEngine(LocalEngineConfig(prefix_cache=small), loaded=tiny_model)
    base = prefix()
    pinned = pin(engine, base)
    for i in range(12):
        other = prefix(system=f"Unrelated document {i}: " + DOCUMENT[::-1], turns=(f"q{i}",))
        usage(engine, follow_up(other, "x"))
    assert engine.prefix_stats().evictions > 0
    assert usage(engine, follow_up(base, "ok", "next?")).cache_read_input_tokens == (
        pinned.cached_tokens
    )


def test_the_pin_cap_refuses_and_says_so(tiny_model: Any) -> None:
    capped = PrefixCacheConfig(
        block_size=BLOCK, min_cache_tokens=16, kv_cache_bytes=8 << 20, max_pinned_fraction=0.0005
    )
    engine = LocalEngine(LocalEngineConfig(prefix_cache=capped), loaded=tiny_model)
    with pytest.raises(RequestError, match="pin cap") as refused:
        pin(engine, prefix())
    assert "max_pinned_fraction" in refused.value.message
    assert engine.prefix_stats().blocks_pinned == 0
    registry = engine.named_prefixes
    assert registry is not None and registry.list("") == []


def test_breakpoint_pins_count_the_named_ones_against_the_cap(tiny_model: Any) -> None:
    engine = LocalEngine(LocalEngineConfig(prefix_cache=CONFIG), loaded=tiny_model)
    pinned = pin(engine, prefix())
    cap = int(
        CONFIG.max_pinned_fraction * (CONFIG.kv_cache_bytes // engine.prefix_cache.block_bytes)
    )
    assert engine.prefix_stats().blocks_pinned == pinned.cached_tokens // BLOCK <= cap


def test_tenants_are_apart(engine: LocalEngine) -> None:
    registry = engine.named_prefixes
    assert registry is not None
    mine = pin(engine, prefix(tenant="t-a"))
    assert registry.get("t-b", mine.id) is None and registry.list("t-b") == []
    assert registry.remove("t-b", mine.id) is None and registry.retime("t-b", mine.id, 9) is None
    other = follow_up(prefix(tenant="t-b"), "ok", "next?")
    assert usage(engine, other).cache_read_input_tokens == 0
    assert [p.id for p in registry.list("t-a")] == [mine.id]


def test_refusals(engine: LocalEngine) -> None:
    short = ChatRequest(
        model="tiny", messages=(Message(role="user", content=(TextBlock(text="hi"),)),)
    )
    with pytest.raises(RequestError, match="at least 16 tokens"):
        pin(engine, short)
    marked = ChatRequest(
        model="tiny",
        system=(TextBlock(text=DOCUMENT, cache_control=CacheControl()),),
        messages=(Message(role="user", content=(TextBlock(text="x"),)),),
    )
    with pytest.raises(RequestError, match="cache_control"):
        pin(engine, marked)
    registry = engine.named_prefixes
    assert registry is not None and registry.list("") == []


def test_a_cancelled_pin_holds_nothing(engine: LocalEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PrefixCancelled):
        engine.pin_prefix(prefix(), ttl_seconds=60, name=None, model="tiny", cancel=cancel)
    assert engine.prefix_stats().blocks_pinned == 0
    assert engine.prefix_cache.blocks_in_use == 0 and engine.prefix_cache.claims_in_flight == 0


def test_clearing_the_cache_drops_named_prefixes(engine: LocalEngine) -> None:
    pin(engine, prefix())
    engine.clear_prefix_cache()
    registry = engine.named_prefixes
    assert registry is not None and registry.list("") == []
    assert engine.prefix_stats().blocks_pinned == 0 and engine.prefix_stats().blocks_used == 0
