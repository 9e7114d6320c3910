"""Faithfulness on the embedded SmolLM2 with the KV disk tier: a disk-tier hit never
changes greedy output.

A prefix reaches the disk tier two ways -- written through and read back by a
restarted engine (empty RAM tier, same directory), or evicted from a small RAM
tier by other prompts -- and each time the request it serves must decode the
same text and token count as an engine with no cache at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import ChatRequest, TextBlock
from promptcache.result import KVTierSnapshot
from tests.engine.local.test_faithfulness import (
    GREEDY,
    SYSTEM,
    WARM,
    assert_faithful,
    complete,
    say,
)

pytestmark = pytest.mark.model

BLOCK_BYTES = 16 * 46_080  # SmolLM2-135M: 16 tokens x 30 layers x K,V x 3 heads x 64 x fp32


@pytest.fixture(scope="module")
def uncached(embedded_model: Any) -> LocalEngine:
    return LocalEngine(
        LocalEngineConfig(prefix_cache=PrefixCacheConfig(enabled=False)), loaded=embedded_model
    )


def on_disk(embedded_model: Any, directory: Path, **options: Any) -> LocalEngine:
    config = PrefixCacheConfig(
        block_size=16, min_cache_tokens=32, disk_path=str(directory), **options
    )
    return LocalEngine(LocalEngineConfig(prefix_cache=config), loaded=embedded_model)


def tiers(engine: LocalEngine) -> dict[str, KVTierSnapshot]:
    return {tier.tier: tier for tier in engine.prefix_stats().tiers}


def ask(question: str, system: str = SYSTEM, warm: bool = False) -> ChatRequest:
    return ChatRequest(
        model="m",
        system=(TextBlock(text=system),),
        messages=(say("user", question),),
        sampling=WARM if warm else GREEDY,
    )


def test_a_disk_tier_hit_after_a_restart_is_faithful(
    embedded_model: Any, uncached: LocalEngine, tmp_path: Path
) -> None:
    first = on_disk(embedded_model, tmp_path)
    complete(first, ask("Hi!", warm=True))
    first.close()  # the queued blocks are written; the directory is free again
    restarted = on_disk(embedded_model, tmp_path)
    try:
        assert tiers(restarted)["ram"].blocks == 0 and tiers(restarted)["disk"].blocks > 0
        assert_faithful(restarted, uncached, ask("When do you open?"))
        figures = tiers(restarted)
        assert figures["disk"].hits > 0 and figures["ram"].promotions == figures["disk"].hits
        assert figures["disk"].corrupt_blocks == 0
        assert_faithful(restarted, uncached, ask("Do you sell rye bread?"))  # now from RAM
    finally:
        restarted.close()


def test_a_hit_on_blocks_evicted_to_disk_is_faithful(
    embedded_model: Any, uncached: LocalEngine, tmp_path: Path
) -> None:
    engine = on_disk(embedded_model, tmp_path, kv_cache_bytes=6 * BLOCK_BYTES)
    try:
        complete(engine, ask("Hi!", warm=True))
        other = " ".join(f"Note {i}: the oven at station {i % 4} runs hot." for i in range(40))
        complete(engine, ask("Hello.", system=other, warm=True))  # evicts the bakery prompt
        assert tiers(engine)["ram"].evictions > 0
        before = tiers(engine)["disk"].hits
        assert_faithful(engine, uncached, ask("When do you open?"))
        assert tiers(engine)["disk"].hits > before
    finally:
        engine.close()
