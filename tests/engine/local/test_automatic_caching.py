"""Automatic caching on the local engine: reported exactly like an explicit marker."""

from __future__ import annotations

import dataclasses
from typing import Any

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import CacheControl, ChatRequest, Message, TextBlock
from promptcache.result import Result, Usage

CONFIG = PrefixCacheConfig(block_size=4, min_cache_tokens=16, kv_cache_bytes=8 << 20)
SYSTEM = " ".join(f"rule {i} says {i % 5}." for i in range(20))


def request(
    question: str, *, auto: CacheControl | None, marker: CacheControl | None
) -> ChatRequest:
    return ChatRequest(
        model="tiny",
        system=(TextBlock(text=SYSTEM),),
        messages=(Message(role="user", content=(TextBlock(text=question, cache_control=marker),)),),
        cache_control=auto,
    )


def usage(engine: LocalEngine, req: ChatRequest) -> Usage:
    result = list(
        engine.generate(
            dataclasses.replace(req, sampling=dataclasses.replace(req.sampling, max_tokens=2))
        )
    )[-1]
    assert isinstance(result, Result)
    return result.usage


def test_top_level_cache_control_writes_like_a_marker_on_the_last_block(tiny_model: Any) -> None:
    hour = CacheControl(ttl="1h")
    explicit = LocalEngine(LocalEngineConfig(prefix_cache=CONFIG), loaded=tiny_model)
    automatic = LocalEngine(LocalEngineConfig(prefix_cache=CONFIG), loaded=tiny_model)
    by_marker = usage(explicit, request("What does rule 3 say?", auto=None, marker=hour))
    by_auto = usage(automatic, request("What does rule 3 say?", auto=hour, marker=None))
    assert by_auto == by_marker
    assert by_auto.cache_creation_1h_input_tokens > 0
    # The next turn reads what the automatic breakpoint wrote.
    grown = ChatRequest(
        model="tiny",
        system=(TextBlock(text=SYSTEM),),
        messages=(
            Message(role="user", content=(TextBlock(text="What does rule 3 say?"),)),
            Message(role="assistant", content=(TextBlock(text="It says 3."),)),
            Message(role="user", content=(TextBlock(text="And rule 4?"),)),
        ),
        cache_control=hour,
    )
    second = usage(automatic, grown)
    assert second.cache_read_input_tokens >= by_auto.cache_creation_1h_input_tokens
    assert second.cache_creation_1h_input_tokens > 0
