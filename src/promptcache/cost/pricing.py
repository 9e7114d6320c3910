"""Prices per model, cache multipliers per provider, and the cost of one :class:`Usage`.

A price is an input and an output rate per million tokens plus a
:class:`PricingProfile`: the multipliers a provider applies to cached prompt
tokens (read from cache, written at a 5-minute or a 1-hour breakpoint).
Amounts are :class:`~decimal.Decimal` so that published examples come out
exactly (GLM at 0.01 per 1K tokens: 2,000 prompt tokens of which 1,200 cached
and 500 output cost 0.019 against 0.025 without caching).

Built-in profiles
-----------------
=========== ========== ======== ========
profile     cache read write 5m write 1h
=========== ========== ======== ========
anthropic   x0.1       x1.25    x2.0
openai      x0.5       x1       x1
openai-0.25 x0.25      x1       x1
openai-0.1  x0.1       x1       x1
glm         x0.5       x1       x1
deepseek    x0.1       x1       x1
local       x0.1       x1       x1
=========== ========== ======== ========

OpenAI bills cached input at half price for the GPT-4o family, a quarter for
GPT-4.1 and a tenth for GPT-5: hence three ``openai`` profiles. ``local`` is
for promptcache's own engine: nothing is billed, but a notional price (see
:data:`LOCAL_MODEL_PRICE`) makes the work saved by the prefix cache visible in
money, at the read discount the big providers use.

The built-in model prices are **list prices as of 2025-10, in USD per million
tokens**; they go stale. Override or extend them with a TOML file
(``promptcache serve --prices PATH``, :meth:`PriceTable.from_toml`)::

    # Prices per million tokens. Every key is optional.
    replace_builtin = false      # true: start from an empty table

    [default]                    # price for models no entry matches
    input = 0.10
    output = 0.40
    profile = "local"

    [profiles.my-provider]       # a new profile, or an override of a built-in one
    cache_read = 0.25            # multipliers of the input rate
    cache_write_5m = 1.0
    cache_write_1h = 1.0

    [models."gpt-4o"]            # an exact name, a prefix, or a glob ("my-org/*")
    input = 2.5
    output = 10.0
    profile = "openai"           # optional: an overridden entry keeps its profile,
                                 # a new one defaults to "openai"

Numbers may be given as TOML numbers or as strings (``"0.0375"``) for exact
decimals. Lookup is case-insensitive: exact name first, then the longest glob
pattern that matches, then the longest entry the name starts with (so
``claude-sonnet-4-5-20250929`` finds ``claude-sonnet-4-5``), then the same without
a vendor prefix (``anthropic/claude-sonnet-4.5``), then the default (with an upstream
provider's multipliers: :meth:`PriceTable.with_default_profile`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from promptcache.result import Usage

PER_MILLION = Decimal(1_000_000)
PRICES_AS_OF = "2025-10"
"""Date of the built-in list prices (USD per million tokens)."""


@dataclass(frozen=True, kw_only=True)
class PricingProfile:
    """A provider's multipliers of the input rate for cached prompt tokens."""

    name: str
    cache_read: Decimal
    cache_write_5m: Decimal = Decimal(1)
    cache_write_1h: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a pricing profile needs a name")
        for attr in ("cache_read", "cache_write_5m", "cache_write_1h"):
            value = getattr(self, attr)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(
                    f"profile {self.name!r}: {attr} must be a finite Decimal >= 0, got {value!r}"
                )


ANTHROPIC = PricingProfile(
    name="anthropic",
    cache_read=Decimal("0.1"),
    cache_write_5m=Decimal("1.25"),
    cache_write_1h=Decimal("2.0"),
)
OPENAI = PricingProfile(name="openai", cache_read=Decimal("0.5"))
OPENAI_QUARTER = PricingProfile(name="openai-0.25", cache_read=Decimal("0.25"))
OPENAI_TENTH = PricingProfile(name="openai-0.1", cache_read=Decimal("0.1"))
GLM = PricingProfile(name="glm", cache_read=Decimal("0.5"))
DEEPSEEK = PricingProfile(name="deepseek", cache_read=Decimal("0.1"))
LOCAL = PricingProfile(name="local", cache_read=Decimal("0.1"))

BUILTIN_PROFILES: Mapping[str, PricingProfile] = {
    p.name: p for p in (ANTHROPIC, OPENAI, OPENAI_QUARTER, OPENAI_TENTH, GLM, DEEPSEEK, LOCAL)
}


def profile_named(
    name: str, profiles: Mapping[str, PricingProfile] = BUILTIN_PROFILES
) -> PricingProfile:
    """The profile called ``name``; a ``ValueError`` listing the valid names otherwise."""
    try:
        return profiles[name]
    except KeyError:
        valid = ", ".join(sorted(profiles))
        raise ValueError(f"unknown pricing profile {name!r}; valid: {valid}") from None


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    """Input and output rates per million tokens, and the profile for cached tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    profile: PricingProfile

    def __post_init__(self) -> None:
        for attr in ("input_per_mtok", "output_per_mtok"):
            value = getattr(self, attr)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"{attr} must be a finite Decimal >= 0, got {value!r}")

    @classmethod
    def of(
        cls,
        input_per_mtok: Decimal | str | int,
        output_per_mtok: Decimal | str | int,
        profile: PricingProfile | str,
    ) -> ModelPrice:
        """Convenience constructor: ``ModelPrice.of("3", "15", "anthropic")``."""
        return cls(
            input_per_mtok=Decimal(input_per_mtok),
            output_per_mtok=Decimal(output_per_mtok),
            profile=profile if isinstance(profile, PricingProfile) else profile_named(profile),
        )


LOCAL_MODEL_PRICE = ModelPrice.of("0.10", "0.40", LOCAL)
"""Notional price of the embedded SmolLM2-135M-Instruct: about what hosted APIs
ask for the smallest models. Nothing is billed; it only makes savings visible."""


def cost(usage: Usage, price: ModelPrice) -> Decimal:
    """What ``usage`` costs at ``price``, with the profile's cache multipliers."""
    rate = price.input_per_mtok
    profile = price.profile
    prompt = (
        usage.input_tokens * rate
        + usage.cache_read_input_tokens * rate * profile.cache_read
        + usage.cache_creation_5m_input_tokens * rate * profile.cache_write_5m
        + usage.cache_creation_1h_input_tokens * rate * profile.cache_write_1h
    )
    return (prompt + usage.output_tokens * price.output_per_mtok) / PER_MILLION


def cost_without_cache(usage: Usage, price: ModelPrice) -> Decimal:
    """What ``usage`` would cost with no caching: every prompt token at the input rate."""
    return (
        usage.prompt_tokens * price.input_per_mtok + usage.output_tokens * price.output_per_mtok
    ) / PER_MILLION


def format_amount(amount: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros (``"0.019"``, ``"0"``)."""
    if amount == 0:
        return "0"
    return format(amount.normalize(), "f")


def _builtin_models() -> dict[str, ModelPrice]:
    a, o, o4, o10, g, d = "anthropic", "openai", "openai-0.25", "openai-0.1", "glm", "deepseek"
    rows: list[tuple[str, str, str, str]] = [
        # Anthropic (claude.com/pricing)
        ("claude-opus-4-5", "5", "25", a),
        ("claude-opus-4", "15", "75", a),
        ("claude-sonnet-4", "3", "15", a),
        ("claude-3-7-sonnet", "3", "15", a),
        ("claude-3-5-sonnet", "3", "15", a),
        ("claude-haiku-4-5", "1", "5", a),
        ("claude-3-5-haiku", "0.80", "4", a),
        ("claude-3-opus", "15", "75", a),
        ("claude-3-haiku", "0.25", "1.25", a),
        # OpenAI (openai.com/api/pricing): cached input x0.5 (4o), x0.25 (4.1), x0.1 (5)
        ("gpt-4o", "2.50", "10", o),
        ("gpt-4o-mini", "0.15", "0.60", o),
        ("gpt-4.1", "2", "8", o4),
        ("gpt-4.1-mini", "0.40", "1.60", o4),
        ("gpt-4.1-nano", "0.10", "0.40", o4),
        ("gpt-5", "1.25", "10", o10),
        ("gpt-5-mini", "0.25", "2", o10),
        ("gpt-5-nano", "0.05", "0.40", o10),
        # Zhipu GLM (z.ai international, USD)
        ("glm-4.6", "0.60", "2.20", g),
        ("glm-4.5", "0.60", "2.20", g),
        ("glm-4.5-air", "0.20", "1.10", g),
        # DeepSeek (api-docs.deepseek.com): cache hit x0.1 of a miss
        ("deepseek-chat", "0.28", "0.42", d),
        ("deepseek-reasoner", "0.28", "0.42", d),
    ]
    table = {name: ModelPrice.of(i, out, prof) for name, i, out, prof in rows}
    table["smollm2*"] = LOCAL_MODEL_PRICE
    return table


@dataclass(frozen=True)
class PriceTable:
    """Model name (exact, prefix or glob; case-insensitive) -> :class:`ModelPrice`."""

    models: Mapping[str, ModelPrice] = field(default_factory=_builtin_models)
    default: ModelPrice = LOCAL_MODEL_PRICE
    profiles: Mapping[str, PricingProfile] = field(default_factory=lambda: dict(BUILTIN_PROFILES))

    def __post_init__(self) -> None:
        # Keys are stored lower-cased so lookups can be case-insensitive.
        object.__setattr__(self, "models", {k.lower(): v for k, v in self.models.items()})

    @classmethod
    def builtin(cls) -> PriceTable:
        return cls()

    def lookup(self, model: str) -> ModelPrice:
        """The price for ``model``: exact, then longest glob, then longest prefix (for the
        name, then for it without a vendor prefix), then the default."""
        return self._find(model) or self.default

    def _find(self, model: str) -> ModelPrice | None:
        name = model.lower()
        return self._match(name) or self._match(name.rpartition("/")[2])

    def _match(self, name: str) -> ModelPrice | None:
        exact = self.models.get(name)
        if exact is not None:
            return exact
        globs = [k for k in self.models if _is_glob(k) and fnmatch.fnmatchcase(name, k)]
        if globs:
            return self.models[max(globs, key=len)]
        prefixes = [k for k in self.models if not _is_glob(k) and name.startswith(k)]
        if prefixes:
            return self.models[max(prefixes, key=len)]
        return None

    def knows(self, model: str) -> bool:
        """Whether ``model`` matches an entry (rather than falling back to the default)."""
        return self._find(model) is not None

    def with_default_profile(self, profile: str) -> PriceTable:
        """This table, unlisted models priced with ``profile``'s (a provider's) multipliers."""
        default = dataclasses.replace(self.default, profile=profile_named(profile, self.profiles))
        return dataclasses.replace(self, default=default)

    @classmethod
    def from_toml(cls, path: str | Path) -> PriceTable:
        """Load a table from a TOML file (schema in the module docstring)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"price file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"price file {path} is not valid TOML: {exc}") from None
        try:
            return cls.from_mapping(data)
        except ValueError as exc:
            raise ValueError(f"price file {path}: {exc}") from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PriceTable:
        """Build a table from parsed TOML (or any mapping of the same shape)."""
        known = {"replace_builtin", "default", "profiles", "models"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown top-level key(s) {unknown}; valid: {sorted(known)}")
        replace = data.get("replace_builtin", False)
        if not isinstance(replace, bool):
            raise ValueError(f"replace_builtin must be true or false, got {replace!r}")

        profiles: dict[str, PricingProfile] = dict(BUILTIN_PROFILES)
        profile_specs = _table(data, "profiles")
        for name in profile_specs:
            profiles[name] = _parse_profile(name, _table(profile_specs, name, f"profiles.{name}"))
        models: dict[str, ModelPrice] = {} if replace else dict(_builtin_models())
        model_specs = _table(data, "models")
        for name in model_specs:
            where = f'models."{name}"'
            spec = _table(model_specs, name, where)
            # Overriding a built-in entry's rates keeps its profile unless one is given.
            inherited = models[name.lower()].profile if name.lower() in models else OPENAI
            models[name.lower()] = _parse_price(spec, where, profiles, inherited)
        default = LOCAL_MODEL_PRICE
        if "default" in data:
            default = _parse_price(_table(data, "default"), "default", profiles, LOCAL)
        return cls(models=models, default=default, profiles=profiles)


def _is_glob(key: str) -> bool:
    return any(ch in key for ch in "*?[")


def _table(parent: Mapping[str, Any], key: str, where: str | None = None) -> Mapping[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, Mapping):
        raise ValueError(f"{where or key} must be a table, got {type(value).__name__}")
    return value


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where} must be a number, got {value!r}")
    try:
        # str() of a float is its shortest round-trip form: 2.5 -> Decimal("2.5"), not 2.4999...
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where} must be a number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {value!r}")
    return number


def _parse_profile(name: str, spec: Mapping[str, Any]) -> PricingProfile:
    where = f"profiles.{name}"
    fields = {"cache_read", "cache_write_5m", "cache_write_1h"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    if "cache_read" not in spec:
        raise ValueError(f"{where}.cache_read is required")
    return PricingProfile(
        name=name,
        cache_read=_decimal(spec["cache_read"], f"{where}.cache_read"),
        cache_write_5m=_decimal(spec.get("cache_write_5m", 1), f"{where}.cache_write_5m"),
        cache_write_1h=_decimal(spec.get("cache_write_1h", 1), f"{where}.cache_write_1h"),
    )


def _parse_price(
    spec: Mapping[str, Any],
    where: str,
    profiles: Mapping[str, PricingProfile],
    inherited: PricingProfile,
) -> ModelPrice:
    fields = {"input", "output", "profile"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    for required in ("input", "output"):
        if required not in spec:
            raise ValueError(f"{where}.{required} is required (price per million tokens)")
    profile = inherited
    if "profile" in spec:
        profile_name = spec["profile"]
        if not isinstance(profile_name, str):
            raise ValueError(f"{where}.profile must be a string, got {profile_name!r}")
        try:
            profile = profile_named(profile_name, profiles)
        except ValueError as exc:
            raise ValueError(f"{where}.profile: {exc}") from None
    return ModelPrice(
        input_per_mtok=_decimal(spec["input"], f"{where}.input"),
        output_per_mtok=_decimal(spec["output"], f"{where}.output"),
        profile=profile,
    )


__all__ = [
    "ANTHROPIC",
    "BUILTIN_PROFILES",
    "DEEPSEEK",
    "GLM",
    "LOCAL",
    "LOCAL_MODEL_PRICE",
    "OPENAI",
    "PRICES_AS_OF",
    "ModelPrice",
    "PriceTable",
    "PricingProfile",
    "cost",
    "cost_without_cache",
    "format_amount",
    "profile_named",
]
