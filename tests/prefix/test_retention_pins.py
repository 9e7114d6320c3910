"""``prompt_cache_retention: "24h"``: a third pin TTL, under the same cap as breakpoints,
reported as pinned / refused / uncached (never a valid ``cache_control.ttl``)."""

from __future__ import annotations

import pytest

from promptcache.dialects.anthropic import parse as anthropic_parse
from promptcache.engine.local.generation import _retention_report
from promptcache.errors import RequestError
from promptcache.prefix import CommitReport, PrefixCache
from promptcache.request import PinTTL
from promptcache.result import RetentionReport
from tests.prefix.helpers import FakeClock, hit_tokens, kv_for, make_cache

PROMPT = list(range(100, 112))  # 3 blocks of 4


def commit(cache: PrefixCache, tokens: list[int], pins: list[tuple[int, PinTTL]]) -> CommitReport:
    match = cache.match(tokens, salt="")
    try:
        return cache.commit(match, tokens, kv_for(tokens), pins=pins)
    finally:
        cache.release(match)


def test_a_24h_pin_outlives_an_hour_and_ends_after_a_day() -> None:
    clock = FakeClock()
    cache = make_cache(budget_blocks=3, max_pinned_fraction=1.0, clock=clock)
    report = commit(cache, PROMPT, [(len(PROMPT), "24h")])
    assert report.pinned == ((12, "24h"),)
    assert _retention_report(report) == RetentionReport(status="pinned", tokens=12)
    clock.advance(23 * 3600)  # an hour pin would be long gone
    assert cache.stats().blocks_pinned == 3
    commit(cache, list(range(200, 212)), [])  # no room: the pinned prompt stays
    assert cache.stats().blocks_pinned == 3
    clock.advance(2 * 3600)  # 25h: the pin has ended; the blocks stay until evicted
    assert cache.stats().blocks_pinned == 0
    assert hit_tokens(cache, PROMPT) == 12


def test_a_24h_pin_over_the_cap_is_refused_and_reported() -> None:
    cache = make_cache(budget_blocks=8, max_pinned_fraction=0.25)  # cap: 2 blocks
    report = commit(cache, PROMPT, [(8, "1h"), (len(PROMPT), "24h")])
    assert report.pinned == ((8, "1h"),)
    assert report.pins_refused == ((12, "24h"),)
    assert _retention_report(report) == RetentionReport(status="refused", tokens=12)
    assert hit_tokens(cache, PROMPT) == 12  # still cached, not pinned


def test_a_prompt_below_the_minimum_has_nothing_to_pin() -> None:
    cache = make_cache(min_cache_tokens=64)
    report = commit(cache, PROMPT, [(len(PROMPT), "24h")])
    assert _retention_report(report) == RetentionReport(status="uncached", tokens=12)


def test_24h_is_not_a_cache_control_ttl() -> None:
    body = {
        "model": "m",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "x",
                        "cache_control": {"type": "ephemeral", "ttl": "24h"},
                    }
                ],
            }
        ],
    }
    with pytest.raises(RequestError, match="ttl"):
        anthropic_parse.parse_request(body)
