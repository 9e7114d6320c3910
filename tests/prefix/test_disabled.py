"""The prefix cache when caching is off: the same protocol, nothing read or written."""

from __future__ import annotations

import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.prefix import (
    BasePrefixCache,
    DisabledPrefixCache,
    PrefixCache,
    PrefixCacheConfig,
)
from promptcache.result import PrefixCacheSnapshot
from tests.prefix.helpers import BLOCK, LAYOUT, empty_out, hit_tokens, kv_for, make_cache, store
from tests.tiny_models import build_tiny_model

PROMPT = list(range(100, 126))


def _disabled() -> DisabledPrefixCache:
    config = PrefixCacheConfig(block_size=BLOCK, min_cache_tokens=8, enabled=False)
    return DisabledPrefixCache(config, LAYOUT, model_id="tiny")


def test_every_match_misses_and_nothing_is_stored() -> None:
    cache = _disabled()
    assert store(cache, PROMPT) == 0
    assert hit_tokens(cache, PROMPT) == 0
    assert cache.stats() == PrefixCacheSnapshot()
    assert (cache.blocks_in_use, cache.claims_in_flight, cache.requests_waiting) == (0, 0, 0)
    assert cache.block_bytes == BLOCK * LAYOUT.bytes_per_token


def test_commit_reports_every_pin_uncached_and_checks_ttls() -> None:
    cache = _disabled()
    match = cache.match(PROMPT, salt="")
    report = cache.commit(match, PROMPT, kv_for(PROMPT), pins=[(10, "5m"), (99, "1h")])
    assert report.pins_uncached == ((8, "5m"), (24, "1h"))
    assert (report.tokens_written, report.pinned) == (0, ())
    cache.release(match)
    match = cache.match(PROMPT, salt="")
    with pytest.raises(ValueError, match="unknown cache TTL"):
        cache.commit(match, PROMPT, kv_for(PROMPT), pins=[(8, "2d")])  # type: ignore[list-item]
    cache.release(match)


def test_the_protocol_checks_hold() -> None:
    cache = _disabled()
    match = cache.match(PROMPT, salt="")
    cache.gather(match, empty_out(len(PROMPT)))
    cache.commit(match, PROMPT, kv_for(PROMPT))
    with pytest.raises(RuntimeError, match="twice"):
        cache.commit(match, PROMPT, kv_for(PROMPT))
    cache.release(match)
    cache.release(match)  # idempotent
    with pytest.raises(RuntimeError, match="released"):
        cache.gather(match, empty_out(len(PROMPT)))
    with pytest.raises(RuntimeError, match="released"):
        cache.commit(match, PROMPT, kv_for(PROMPT))


def test_a_match_is_a_handle_without_the_caches_bookkeeping() -> None:
    cache = make_cache()
    match = cache.match(PROMPT, salt="")
    assert {name for name in vars(match) if not name.startswith("__")} == {
        "num_tokens",
        "num_blocks",
        "key",
        "miss",  # the diagnosis of what was not read: plain values, no bookkeeping
        "diverged_block",
    }
    cache.release(match)


@pytest.mark.parametrize(("enabled", "kind"), [(True, PrefixCache), (False, DisabledPrefixCache)])
def test_the_local_engine_picks_the_cache_from_its_config(
    enabled: bool, kind: type[BasePrefixCache]
) -> None:
    config = LocalEngineConfig(prefix_cache=PrefixCacheConfig(enabled=enabled))
    engine = LocalEngine(config, loaded=build_tiny_model())
    assert type(engine.prefix_cache) is kind
