"""Prices in front of an upstream provider: its cache multipliers for models the table
does not list, and gateway model ids (``vendor/model``) found under their own name."""

from __future__ import annotations

from decimal import Decimal

import pytest

from promptcache.cost.pricing import PriceTable, cost
from promptcache.engine.upstream.profiles import PROFILES
from promptcache.result import Usage


def test_a_gateway_model_id_finds_the_vendors_price() -> None:
    table = PriceTable.builtin()
    claude = table.lookup("anthropic/claude-sonnet-4.5")
    assert claude is table.lookup("claude-sonnet-4")
    assert claude.profile.name == "anthropic"
    assert table.knows("anthropic/claude-sonnet-4.5")
    assert table.lookup("deepseek/deepseek-chat").profile.name == "deepseek"
    assert not table.knows("acme/unknown-model")
    assert table.knows("smollm2-135m")  # an entry equal to the default still counts


@pytest.mark.parametrize("provider", sorted(PROFILES))
def test_unlisted_models_take_the_providers_multipliers(provider: str) -> None:
    table = PriceTable.builtin().with_default_profile(PROFILES[provider].pricing)
    price = table.lookup("some-new-model")
    assert price.profile.name == PROFILES[provider].pricing
    assert price.input_per_mtok == PriceTable.builtin().default.input_per_mtok
    assert table.lookup("gpt-4o").profile.name == "openai"  # listed models keep theirs


def test_deepseek_cache_hits_cost_a_tenth() -> None:
    table = PriceTable.builtin().with_default_profile("deepseek")
    usage = Usage(input_tokens=400, cache_read_input_tokens=600)
    price = table.lookup("deepseek-v9")
    assert cost(usage, price) == (400 + 60) * price.input_per_mtok / Decimal(1_000_000)


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pricing profile"):
        PriceTable.builtin().with_default_profile("nope")
