from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from promptcache.cost.pricing import (
    ANTHROPIC,
    BUILTIN_PROFILES,
    LOCAL_MODEL_PRICE,
    ModelPrice,
    PriceTable,
    PricingProfile,
    cost,
    cost_without_cache,
    format_amount,
    profile_named,
)
from promptcache.request import BreakpointPosition, CacheTTL
from promptcache.result import Usage
from promptcache.usage import account_prompt

SONNET = ModelPrice.of("3", "15", "anthropic")


def test_glm_example_exactly() -> None:
    # SPEC §5: 0.01 per 1K tokens both ways; 2,000 input of which 1,200 cached, 500 output.
    price = ModelPrice.of("10", "10", "glm")
    usage = account_prompt(
        prompt_tokens=2000, cache_hit_tokens=1200, breakpoints=[], output_tokens=500
    )
    assert cost(usage, price) == Decimal("0.019")
    assert cost_without_cache(usage, price) == Decimal("0.025")
    saved = cost_without_cache(usage, price) - cost(usage, price)
    assert saved / cost_without_cache(usage, price) == Decimal("0.24")
    assert format_amount(cost(usage, price)) == "0.019"


def test_anthropic_documented_multipliers() -> None:
    assert ANTHROPIC.cache_write_5m == Decimal("1.25")
    assert ANTHROPIC.cache_write_1h == Decimal("2")
    assert ANTHROPIC.cache_read == Decimal("0.1")
    # Claude Sonnet at $3/MTok: 5m write $3.75, 1h write $6, read $0.30 per million.
    million = 1_000_000
    assert cost(Usage(cache_creation_5m_input_tokens=million), SONNET) == Decimal("3.75")
    assert cost(Usage(cache_creation_1h_input_tokens=million), SONNET) == Decimal("6")
    assert cost(Usage(cache_read_input_tokens=million), SONNET) == Decimal("0.3")
    assert cost(Usage(input_tokens=million), SONNET) == Decimal("3")
    assert cost(Usage(output_tokens=million), SONNET) == Decimal("15")


@pytest.mark.parametrize(
    ("hit", "breakpoints", "expected_read", "expected_1h", "expected_5m", "expected_cost"),
    [
        # Layout 1: cold cache, 1h breakpoint at 2048 then 5m at 4096 of a 5000-token prompt.
        # 2048 x 6 + 2048 x 3.75 + 904 x 3 = 22,680 (per million) -> 0.02268
        (0, [(2048, "1h"), (4096, "5m")], 0, 2048, 2048, Decimal("0.02268")),
        # Layout 2: the 1h prefix was hit; only the 5m part is written.
        # 2048 x 0.3 + 2048 x 3.75 + 904 x 3 = 11,006.4 -> 0.0110064
        (2048, [(2048, "1h"), (4096, "5m")], 2048, 0, 2048, Decimal("0.0110064")),
        # Layout 3: hit A=1024 below the 1h breakpoint B=3072, 5m breakpoint C=4096:
        # read A, 1h write B-A, 5m write C-B, the rest plain input.
        # 1024 x 0.3 + 2048 x 6 + 1024 x 3.75 + 904 x 3 = 19,147.2 -> 0.0191472
        (1024, [(3072, "1h"), (4096, "5m")], 1024, 2048, 1024, Decimal("0.0191472")),
        # Layout 4: everything up to the last breakpoint hit: no writes at all.
        # 4096 x 0.3 + 904 x 3 = 3,940.8 -> 0.0039408
        (4096, [(2048, "1h"), (4096, "5m")], 4096, 0, 0, Decimal("0.0039408")),
        # Layout 5: only 5m breakpoints, two of them: one write up to the last.
        # 4096 x 3.75 + 904 x 3 = 18,072 -> 0.018072
        (0, [(1024, "5m"), (4096, "5m")], 0, 0, 4096, Decimal("0.018072")),
    ],
)
def test_mixed_ttl_layouts_priced_under_anthropic(
    hit: int,
    breakpoints: list[tuple[int, CacheTTL]],
    expected_read: int,
    expected_1h: int,
    expected_5m: int,
    expected_cost: Decimal,
) -> None:
    usage = account_prompt(
        prompt_tokens=5000,
        cache_hit_tokens=hit,
        breakpoints=[BreakpointPosition(position=p, ttl=t) for p, t in breakpoints],
    )
    assert usage.cache_read_input_tokens == expected_read
    assert usage.cache_creation_1h_input_tokens == expected_1h
    assert usage.cache_creation_5m_input_tokens == expected_5m
    assert usage.prompt_tokens == 5000
    assert cost(usage, SONNET) == expected_cost
    assert cost_without_cache(usage, SONNET) == Decimal("0.015")


def test_writes_can_cost_more_than_no_cache() -> None:
    # A cold write at the 1h rate is twice the plain price: caching only pays on reuse.
    usage = Usage(cache_creation_1h_input_tokens=1000)
    assert cost(usage, SONNET) == 2 * cost_without_cache(usage, SONNET)


def test_builtin_profiles() -> None:
    assert set(BUILTIN_PROFILES) >= {"anthropic", "openai", "glm", "deepseek", "local"}
    for name in ("openai", "openai-0.25", "openai-0.1", "glm", "deepseek", "local"):
        profile = BUILTIN_PROFILES[name]
        assert profile.cache_write_5m == profile.cache_write_1h == 1
    assert BUILTIN_PROFILES["openai"].cache_read == Decimal("0.5")
    assert BUILTIN_PROFILES["glm"].cache_read == Decimal("0.5")
    assert BUILTIN_PROFILES["deepseek"].cache_read == Decimal("0.1")


def test_unknown_profile_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown pricing profile 'nope'.*anthropic"):
        profile_named("nope")


def test_invalid_price_and_profile_values() -> None:
    with pytest.raises(ValueError, match="input_per_mtok"):
        ModelPrice.of("-1", "1", "openai")
    with pytest.raises(ValueError, match="cache_read"):
        PricingProfile(name="x", cache_read=Decimal("NaN"))


@pytest.mark.parametrize(
    ("model", "expected_input"),
    [
        ("claude-sonnet-4-5", Decimal("3")),
        ("claude-sonnet-4-5-20250929", Decimal("3")),  # dated snapshot: prefix
        ("claude-opus-4-1-20250805", Decimal("15")),
        ("claude-opus-4-5-20251101", Decimal("5")),  # longest prefix wins
        ("gpt-4o-2024-08-06", Decimal("2.50")),
        ("gpt-4o-mini-2024-07-18", Decimal("0.15")),
        ("GPT-4.1-MINI", Decimal("0.40")),  # case-insensitive
        ("deepseek-chat", Decimal("0.28")),
        ("glm-4.6", Decimal("0.60")),
        ("SmolLM2-135M-Instruct", LOCAL_MODEL_PRICE.input_per_mtok),  # glob
    ],
)
def test_builtin_lookup(model: str, expected_input: Decimal) -> None:
    table = PriceTable.builtin()
    assert table.lookup(model).input_per_mtok == expected_input
    assert table.knows(model)


def test_lookup_profiles_follow_provider() -> None:
    table = PriceTable.builtin()
    assert table.lookup("claude-3-5-haiku-latest").profile.name == "anthropic"
    assert table.lookup("gpt-4o").profile.name == "openai"
    assert table.lookup("gpt-4.1").profile.name == "openai-0.25"
    assert table.lookup("gpt-5-mini").profile.name == "openai-0.1"


def test_unknown_model_falls_back_to_default() -> None:
    table = PriceTable.builtin()
    assert not table.knows("mystery-model")
    assert table.lookup("mystery-model") == table.default == LOCAL_MODEL_PRICE


def test_exact_beats_glob_beats_prefix() -> None:
    table = PriceTable(
        models={
            "acme": ModelPrice.of("1", "1", "openai"),
            "acme-*": ModelPrice.of("2", "2", "openai"),
            "acme-pro": ModelPrice.of("3", "3", "openai"),
        }
    )
    assert table.lookup("acme-pro").input_per_mtok == 3
    assert table.lookup("acme-lite").input_per_mtok == 2
    assert table.lookup("acme").input_per_mtok == 1
    assert table.lookup("acmex").input_per_mtok == 1  # prefix


def test_from_toml_documented_schema(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        """
[default]
input = 1
output = 2

[profiles.my-provider]
cache_read = 0.25
cache_write_5m = 1.5

[models."gpt-4o"]
input = 2.0
output = 8.0

[models."my-org/*"]
input = "0.0375"
output = 0.15
profile = "my-provider"
""",
        encoding="utf-8",
    )
    table = PriceTable.from_toml(path)
    gpt = table.lookup("gpt-4o")
    assert (gpt.input_per_mtok, gpt.output_per_mtok) == (Decimal("2.0"), Decimal("8.0"))
    assert gpt.profile.name == "openai"  # kept from the built-in entry
    mine = table.lookup("my-org/model-7b")
    assert mine.input_per_mtok == Decimal("0.0375")
    assert mine.profile == PricingProfile(
        name="my-provider", cache_read=Decimal("0.25"), cache_write_5m=Decimal("1.5")
    )
    assert table.lookup("claude-sonnet-4").input_per_mtok == 3  # built-ins still there
    assert table.lookup("unknown").input_per_mtok == 1
    assert table.lookup("unknown").profile.name == "local"


def test_from_toml_replace_builtin(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text("replace_builtin = true\n[models.only]\ninput = 1\noutput = 1\n")
    table = PriceTable.from_toml(path)
    assert table.knows("only")
    assert not table.knows("gpt-4o")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models."gpt-4o"]\ninput = 1\n', r'models\."gpt-4o"\.output is required'),
        ('[models.x]\ninput = "abc"\noutput = 1\n', r"models\.\"x\"\.input must be a number"),
        ("[models.x]\ninput = -1\noutput = 1\n", r"models\.\"x\"\.input must be a finite number"),
        ("[models.x]\ninput = 1\noutput = 1\nprice = 3\n", r"unknown key\(s\) \['price'\]"),
        (
            '[models.x]\ninput = 1\noutput = 1\nprofile = "nope"\n',
            r"models\.\"x\"\.profile: unknown pricing profile 'nope'",
        ),
        ("[profiles.p]\ncache_write_5m = 1\n", r"profiles\.p\.cache_read is required"),
        ("[profiles.p]\ncache_read = true\n", r"profiles\.p\.cache_read must be a number"),
        ("model = 3\n", r"unknown top-level key\(s\) \['model'\]"),
        ('replace_builtin = "yes"\n', "replace_builtin must be true or false"),
        ("models = 3\n", "models must be a table"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_from_toml_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        PriceTable.from_toml(path)
    assert str(path) in str(info.value)


def test_from_toml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        PriceTable.from_toml(tmp_path / "absent.toml")


def test_format_amount() -> None:
    assert format_amount(Decimal("0.019000")) == "0.019"
    assert format_amount(Decimal("10")) == "10"
    assert format_amount(Decimal("0E-8")) == "0"
    assert format_amount(Decimal("0.0000001")) == "0.0000001"
