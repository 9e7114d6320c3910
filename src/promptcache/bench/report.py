"""The figures ``promptcache bench`` produces, and their JSON form (``bench.json``).

Schema ``promptcache.bench/1``::

    {
      "schema": "promptcache.bench/1",
      "created": "2026-01-01T12:00:00+00:00",
      "quick": false,
      "environment": {"model": ..., "python": ..., "torch": ..., "cpus": ..., "platform": ...,
                      "engine": {...engine settings...}},
      "ttft": [{"target_prefix_tokens": 1024, "prompt_tokens": 1051, "cached_tokens": 1040,
                "miss_s": 2.61, "hit_s": 0.09, "miss_over_hit": 29.0,
                "miss_samples_s": [...], "hit_samples_s": [...]}, ...],
      "session": {"profile": "anthropic", "price_model": "claude-sonnet-4-5",
                  "price": {"input_per_mtok": "3", "output_per_mtok": "15"},
                  "explicit_breakpoints": true,
                  "turns": [{"turn": 1, "usage": {...Usage.to_dict()...},
                             "cost": "0.0049", "cost_without_cache": "0.0040"}, ...],
                  "total_cost": "...", "total_cost_without_cache": "...",
                  "saved": "...", "saved_percent": 61.2,
                  "by_profile": {"openai": {"price_model": ..., "total_cost": ...,
                                 "total_cost_without_cache": ..., "saved_percent": ...}, ...}}
    }

Times are seconds (floats, medians of the samples); amounts are decimal
strings, as in ``/v1/cache/stats``. Every cost is computed from the
:class:`~promptcache.result.Usage` the engine reported, never estimated.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from promptcache.cost.pricing import ModelPrice, cost, cost_without_cache, format_amount
from promptcache.result import Usage

SCHEMA = "promptcache.bench/1"


@dataclass(frozen=True, kw_only=True)
class TTFTPoint:
    """Time to first token at one prefix length: cold (miss) and with the prefix cached (hit)."""

    target_prefix_tokens: int
    prompt_tokens: int
    cached_tokens: int
    miss_samples_s: tuple[float, ...]
    hit_samples_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.miss_samples_s or not self.hit_samples_s:
            raise ValueError("a TTFT point needs at least one miss and one hit sample")

    @property
    def miss_s(self) -> float:
        return statistics.median(self.miss_samples_s)

    @property
    def hit_s(self) -> float:
        return statistics.median(self.hit_samples_s)

    @property
    def miss_over_hit(self) -> float:
        return self.miss_s / self.hit_s if self.hit_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_prefix_tokens": self.target_prefix_tokens,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "miss_s": round(self.miss_s, 6),
            "hit_s": round(self.hit_s, 6),
            "miss_over_hit": round(self.miss_over_hit, 3),
            "miss_samples_s": [round(s, 6) for s in self.miss_samples_s],
            "hit_samples_s": [round(s, 6) for s in self.hit_samples_s],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TTFTPoint:
        return cls(
            target_prefix_tokens=int(data["target_prefix_tokens"]),
            prompt_tokens=int(data["prompt_tokens"]),
            cached_tokens=int(data["cached_tokens"]),
            miss_samples_s=tuple(float(s) for s in data["miss_samples_s"]),
            hit_samples_s=tuple(float(s) for s in data["hit_samples_s"]),
        )


@dataclass(frozen=True, kw_only=True)
class TurnCost:
    turn: int
    usage: Usage
    cost: Decimal
    cost_without_cache: Decimal


@dataclass(frozen=True, kw_only=True)
class SessionCost:
    """A multi-turn session's cost per turn, priced from the usages the engine reported."""

    profile: str
    price_model: str
    price: ModelPrice
    explicit_breakpoints: bool
    turns: tuple[TurnCost, ...]
    by_profile: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def total_cost(self) -> Decimal:
        return sum((t.cost for t in self.turns), Decimal(0))

    @property
    def total_cost_without_cache(self) -> Decimal:
        return sum((t.cost_without_cache for t in self.turns), Decimal(0))

    @property
    def saved(self) -> Decimal:
        return self.total_cost_without_cache - self.total_cost

    @property
    def saved_percent(self) -> float:
        baseline = self.total_cost_without_cache
        return float(self.saved * 100 / baseline) if baseline else 0.0

    def cumulative(self) -> tuple[list[Decimal], list[Decimal]]:
        """Running totals (with cache, without cache) after each turn."""
        with_cache: list[Decimal] = []
        without: list[Decimal] = []
        a = b = Decimal(0)
        for turn in self.turns:
            a += turn.cost
            b += turn.cost_without_cache
            with_cache.append(a)
            without.append(b)
        return with_cache, without

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "price_model": self.price_model,
            "price": {
                "input_per_mtok": format_amount(self.price.input_per_mtok),
                "output_per_mtok": format_amount(self.price.output_per_mtok),
            },
            "explicit_breakpoints": self.explicit_breakpoints,
            "turns": [
                {
                    "turn": t.turn,
                    "usage": t.usage.to_dict(),
                    "cost": format_amount(t.cost),
                    "cost_without_cache": format_amount(t.cost_without_cache),
                }
                for t in self.turns
            ],
            "total_cost": format_amount(self.total_cost),
            "total_cost_without_cache": format_amount(self.total_cost_without_cache),
            "saved": format_amount(self.saved),
            "saved_percent": round(self.saved_percent, 3),
            "by_profile": {k: dict(v) for k, v in self.by_profile.items()},
        }


def price_session(
    usages: Sequence[Usage],
    *,
    price: ModelPrice,
    price_model: str,
    explicit_breakpoints: bool,
    alternatives: Mapping[str, tuple[str, ModelPrice]] | None = None,
) -> SessionCost:
    """Price each turn's ``Usage`` at ``price``; ``alternatives`` adds per-profile totals.

    ``alternatives`` maps a profile name to (representative model, price). The
    same usages are valid under every profile: a profile without a write
    premium bills cache writes as plain input, which is what they cost there.
    """
    turns = tuple(
        TurnCost(
            turn=i,
            usage=usage,
            cost=cost(usage, price),
            cost_without_cache=cost_without_cache(usage, price),
        )
        for i, usage in enumerate(usages, start=1)
    )
    by_profile: dict[str, dict[str, Any]] = {}
    for name, (model, alt) in (alternatives or {}).items():
        with_cache = sum((cost(u, alt) for u in usages), Decimal(0))
        without = sum((cost_without_cache(u, alt) for u in usages), Decimal(0))
        by_profile[name] = {
            "price_model": model,
            "total_cost": format_amount(with_cache),
            "total_cost_without_cache": format_amount(without),
            "saved_percent": round(float((without - with_cache) * 100 / without), 3)
            if without
            else 0.0,
        }
    return SessionCost(
        profile=price.profile.name,
        price_model=price_model,
        price=price,
        explicit_breakpoints=explicit_breakpoints,
        turns=turns,
        by_profile=by_profile,
    )


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    created: str
    quick: bool
    environment: Mapping[str, Any]
    ttft: tuple[TTFTPoint, ...]
    session: SessionCost | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created": self.created,
            "quick": self.quick,
            "environment": dict(self.environment),
            "ttft": [p.to_dict() for p in self.ttft],
            "session": self.session.to_dict() if self.session is not None else None,
        }
