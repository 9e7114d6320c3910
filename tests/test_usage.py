from __future__ import annotations

import pytest

from promptcache.request import BreakpointPosition
from promptcache.usage import account_prompt


def test_no_breakpoints_no_hit_is_all_input() -> None:
    usage = account_prompt(prompt_tokens=100, cache_hit_tokens=0, breakpoints=[], output_tokens=7)
    assert usage.input_tokens == 100
    assert usage.cache_creation_input_tokens == 0
    assert usage.cache_read_input_tokens == 0
    assert usage.output_tokens == 7
    assert usage.prompt_tokens == 100


def test_implicit_hit_is_read_rest_is_input() -> None:
    usage = account_prompt(prompt_tokens=2000, cache_hit_tokens=1200, breakpoints=[])
    assert (usage.cache_read_input_tokens, usage.input_tokens) == (1200, 800)


def test_mixed_ttl_rule_read_then_1h_then_5m() -> None:
    bps = [BreakpointPosition(position=1024, ttl="1h"), BreakpointPosition(position=3072, ttl="5m")]
    usage = account_prompt(prompt_tokens=4000, cache_hit_tokens=512, breakpoints=bps)
    assert usage.cache_read_input_tokens == 512
    assert usage.cache_creation_1h_input_tokens == 1024 - 512
    assert usage.cache_creation_5m_input_tokens == 3072 - 1024
    assert usage.input_tokens == 4000 - 3072
    assert usage.prompt_tokens == 4000


def test_breakpoints_at_or_before_the_hit_write_nothing() -> None:
    bps = [BreakpointPosition(position=1024, ttl="1h"), BreakpointPosition(position=2048, ttl="5m")]
    usage = account_prompt(prompt_tokens=3000, cache_hit_tokens=2048, breakpoints=bps)
    assert usage.cache_creation_input_tokens == 0
    assert usage.cache_read_input_tokens == 2048
    assert usage.input_tokens == 952


def test_only_5m_after_hit() -> None:
    bps = [BreakpointPosition(position=1024, ttl="1h"), BreakpointPosition(position=2048, ttl="5m")]
    usage = account_prompt(prompt_tokens=3000, cache_hit_tokens=1024, breakpoints=bps)
    assert usage.cache_creation_1h_input_tokens == 0
    assert usage.cache_creation_5m_input_tokens == 1024


def test_hit_larger_than_prompt_is_rejected() -> None:
    with pytest.raises(ValueError, match="cache_hit_tokens"):
        account_prompt(prompt_tokens=10, cache_hit_tokens=11, breakpoints=[])


def test_greedy_means_temperature_zero_or_no_sampling_parameters() -> None:
    from promptcache.request import SamplingParams

    assert SamplingParams().greedy
    assert SamplingParams(temperature=0.0, top_p=0.9).greedy
    assert not SamplingParams(top_p=0.9).greedy
    assert not SamplingParams(temperature=0.7).greedy
