"""What each request cost, what it would have cost without caching, and the running totals.

Pure arithmetic and bookkeeping: no HTTP, no metrics library. The server
(``promptcache.server.cost_observer``) calls :meth:`CostLedger.record` once per
completed request (a response-cache hit included), turns the returned
:class:`RequestCost` into response headers, and exposes the totals to
Prometheus at scrape time, so recording stays a few additions under a lock.
The ledger keeps totals per (model, tenant) pair and aggregates them overall,
per model and per tenant for ``GET /v1/cache/stats`` (:meth:`CostLedger.snapshot`).

Rules:

* A response-cache **hit** costs 0. What it would have cost without any
  caching (every prompt token at the input rate, plus its output) counts as
  saved, and all its prompt tokens count as cached.
* A **miss** costs its :class:`~promptcache.result.Usage` priced with the
  model's profile (cache reads discounted, writes at their premium); its
  prefix-cache reads count as cached prompt tokens.
* ``saved = cost_without_cache - cost``. It can be negative when a request
  only writes to the cache at a premium (Anthropic's 1.25x / 2x) and nothing
  reuses it.

Amounts in :meth:`CostLedger.snapshot` are **decimal strings** (``"0.019"``),
never floats, so totals stay exact in JSON; parse them with ``Decimal(...)``.
Ratios (``hit_ratio_*``) are floats in 0..1 and ``saved_percent`` a float in
percent. An empty tenant is reported as ``"default"``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from promptcache.cost.pricing import ModelPrice, PriceTable, cost, cost_without_cache, format_amount
from promptcache.result import Usage

DEFAULT_TENANT = "default"


@dataclass(frozen=True, kw_only=True)
class RequestCost:
    """The cost of one request and what it would have cost without any caching."""

    cost: Decimal
    cost_without_cache: Decimal

    @property
    def saved(self) -> Decimal:
        return self.cost_without_cache - self.cost


def request_cost(usage: Usage, price: ModelPrice, *, response_cache_hit: bool) -> RequestCost:
    """Price one request; a response-cache hit costs 0 (see the module docstring)."""
    baseline = cost_without_cache(usage, price)
    return RequestCost(
        cost=Decimal(0) if response_cache_hit else cost(usage, price),
        cost_without_cache=baseline,
    )


@dataclass(kw_only=True)
class CostTotals:
    """Running totals for one slice (overall, a model, a tenant or a pair). Mutable."""

    requests: int = 0
    response_cache_hits: int = 0
    prompt_tokens: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    response_cache_prompt_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    cost_without_cache: Decimal = Decimal(0)

    @property
    def cached_prompt_tokens(self) -> int:
        """Prompt tokens not computed: prefix-cache reads plus every token of a response hit."""
        return self.cache_read_tokens + self.response_cache_prompt_tokens

    @property
    def saved(self) -> Decimal:
        return self.cost_without_cache - self.cost

    @property
    def saved_percent(self) -> float:
        if self.cost_without_cache == 0:
            return 0.0
        return float(self.saved * 100 / self.cost_without_cache)

    @property
    def hit_ratio_requests(self) -> float:
        return self.response_cache_hits / self.requests if self.requests else 0.0

    @property
    def hit_ratio_prompt_tokens(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def add(self, usage: Usage, charge: RequestCost, *, response_cache_hit: bool) -> None:
        self.requests += 1
        self.prompt_tokens += usage.prompt_tokens
        self.output_tokens += usage.output_tokens
        if response_cache_hit:
            self.response_cache_hits += 1
            self.response_cache_prompt_tokens += usage.prompt_tokens
        else:
            self.input_tokens += usage.input_tokens
            self.cache_read_tokens += usage.cache_read_input_tokens
            self.cache_write_5m_tokens += usage.cache_creation_5m_input_tokens
            self.cache_write_1h_tokens += usage.cache_creation_1h_input_tokens
        self.cost += charge.cost
        self.cost_without_cache += charge.cost_without_cache

    def merge(self, other: CostTotals) -> None:
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost += other.cost
        self.cost_without_cache += other.cost_without_cache

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts as ints, amounts as decimal strings, ratios as floats."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _COUNT_FIELDS}
        data["cached_prompt_tokens"] = self.cached_prompt_tokens
        data["cost"] = format_amount(self.cost)
        data["cost_without_cache"] = format_amount(self.cost_without_cache)
        data["saved"] = format_amount(self.saved)
        data["saved_percent"] = round(self.saved_percent, 4)
        data["hit_ratio_requests"] = round(self.hit_ratio_requests, 6)
        data["hit_ratio_prompt_tokens"] = round(self.hit_ratio_prompt_tokens, 6)
        return data


_COUNT_FIELDS = (
    "requests",
    "response_cache_hits",
    "prompt_tokens",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "response_cache_prompt_tokens",
    "output_tokens",
)


class CostLedger:
    """Thread-safe running totals of cost and savings (see the module docstring)."""

    def __init__(self, *, prices: PriceTable | None = None) -> None:
        self.prices = prices if prices is not None else PriceTable.builtin()
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], CostTotals] = {}
        self._model_prices: dict[str, ModelPrice] = {}

    def price_for(self, model: str) -> ModelPrice:
        return self.prices.lookup(model)

    def record(
        self,
        *,
        model: str,
        tenant: str,
        usage: Usage,
        response_cache_hit: bool,
        price: ModelPrice | None = None,
    ) -> RequestCost:
        """Account one completed request; ``price`` defaults to the table's price for ``model``."""
        price = price if price is not None else self.prices.lookup(model)
        charge = request_cost(usage, price, response_cache_hit=response_cache_hit)
        key = (model, tenant or DEFAULT_TENANT)
        with self._lock:
            totals = self._pairs.get(key)
            if totals is None:
                totals = self._pairs[key] = CostTotals()
            totals.add(usage, charge, response_cache_hit=response_cache_hit)
            self._model_prices[model] = price
        return charge

    def reset(self) -> None:
        with self._lock:
            self._pairs.clear()
            self._model_prices.clear()

    def totals(
        self, tenant: str | None = None
    ) -> tuple[CostTotals, dict[str, CostTotals], dict[str, CostTotals]]:
        """Copies of (overall, per model, per tenant) totals; of one tenant's requests only
        when ``tenant`` is given (``""`` is the default tenant)."""
        only = None if tenant is None else (tenant or DEFAULT_TENANT)
        overall = CostTotals()
        by_model: dict[str, CostTotals] = {}
        by_tenant: dict[str, CostTotals] = {}
        with self._lock:
            for (model, owner), pair in self._pairs.items():
                if only is not None and owner != only:
                    continue
                overall.merge(pair)
                by_model.setdefault(model, CostTotals()).merge(pair)
                by_tenant.setdefault(owner, CostTotals()).merge(pair)
        return overall, by_model, by_tenant

    def snapshot(self, tenant: str | None = None) -> dict[str, Any]:
        """JSON-ready totals: ``{"total": {...}, "by_model": {...}, "by_tenant": {...}}``,
        of every tenant or (``tenant``) of one.

        Each ``by_model`` entry also carries the ``price`` used (rates per
        million tokens as decimal strings, the profile name, and whether the
        model matched a table entry or fell back to the default price).
        """
        overall, by_model, by_tenant = self.totals(tenant)
        with self._lock:
            prices = dict(self._model_prices)
        models: dict[str, Any] = {}
        for model, totals in sorted(by_model.items()):
            entry = totals.to_dict()
            price = prices[model]
            entry["price"] = {
                "input_per_mtok": format_amount(price.input_per_mtok),
                "output_per_mtok": format_amount(price.output_per_mtok),
                "profile": price.profile.name,
                "matched": self.prices.knows(model),
            }
            models[model] = entry
        return {
            "total": overall.to_dict(),
            "by_model": models,
            "by_tenant": {t: v.to_dict() for t, v in sorted(by_tenant.items())},
        }

    def pairs(self) -> dict[tuple[str, str], CostTotals]:
        """Copies of the totals per (model, tenant) pair."""
        with self._lock:
            copies = {}
            for key, totals in self._pairs.items():
                copy = CostTotals()
                copy.merge(totals)
                copies[key] = copy
            return copies


__all__ = ["DEFAULT_TENANT", "CostLedger", "CostTotals", "RequestCost", "request_cost"]
