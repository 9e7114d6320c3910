"""What each request cost, what it would have cost without caching, and the running totals.

The server calls :meth:`CostLedger.record` once per completed request (a
response-cache hit included) and puts the returned :class:`RequestCost` in the
response headers (``x-promptcache-cost``, ``x-promptcache-cost-without-cache``).
The ledger keeps totals per (model, tenant) pair and aggregates them overall,
per model and per tenant for ``GET /v1/cache/stats`` (:meth:`CostLedger.snapshot`)
and for Prometheus (:meth:`CostLedger.register_metrics`, read at scrape time so
recording stays a few additions under a lock).

Rules:

* A response-cache **hit** costs 0. What it would have cost without any
  caching (every prompt token at the input rate, plus its output) counts as
  saved, and all its prompt tokens count as cached.
* A **miss** costs its :class:`~promptcache.request.Usage` priced with the
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
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from promptcache.pricing import ModelPrice, PriceTable, cost, cost_without_cache, format_amount
from promptcache.request import Result, Usage

COST_HEADER = "x-promptcache-cost"
COST_WITHOUT_CACHE_HEADER = "x-promptcache-cost-without-cache"
DEFAULT_TENANT = "default"


@dataclass(frozen=True, kw_only=True)
class RequestCost:
    """The cost of one request and what it would have cost without any caching."""

    cost: Decimal
    cost_without_cache: Decimal

    @property
    def saved(self) -> Decimal:
        return self.cost_without_cache - self.cost

    def headers(self) -> dict[str, str]:
        """Response headers: ``x-promptcache-cost`` and ``x-promptcache-cost-without-cache``."""
        return {
            COST_HEADER: format_amount(self.cost),
            COST_WITHOUT_CACHE_HEADER: format_amount(self.cost_without_cache),
        }


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

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Expose the totals on ``registry`` (read at scrape time)."""
        registry.register(_LedgerCollector(self))


class CompletedRequestLike(Protocol):
    """What the server's request observer hook passes (``server.flow.CompletedRequest``)."""

    @property
    def model(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def cache(self) -> str: ...
    @property
    def result(self) -> Result: ...


class CostObserver:
    """The server's request observer: records each completed request, returns its cost headers.

    The price is looked up under the model that produced the answer
    (``result.model``), which for an alias or an upstream snapshot name is
    more precise than the name the client asked for; the totals are grouped
    under that name too.
    """

    def __init__(self, ledger: CostLedger) -> None:
        self.ledger = ledger

    def on_complete(self, record: CompletedRequestLike) -> dict[str, str]:
        charge = self.ledger.record(
            model=record.result.model or record.model,
            tenant=record.tenant,
            usage=record.usage,
            response_cache_hit=record.cache == "HIT",
        )
        return charge.headers()


class _LedgerCollector(Collector):
    def __init__(self, ledger: CostLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        pairs = self._ledger.pairs()
        labels = ["model", "tenant"]
        money = {
            "cost": ("promptcache_cost", "Cost of requests, in the price table's currency"),
            "cost_without_cache": (
                "promptcache_cost_without_cache",
                "What the requests would have cost without any caching",
            ),
        }
        for attr, (name, doc) in money.items():
            family = CounterMetricFamily(name, doc, labels=labels)
            for (model, tenant), totals in pairs.items():
                family.add_metric([model, tenant], float(getattr(totals, attr)))
            yield family
        # A gauge, not a counter: savings shrink when cache writes at a premium go unused.
        saved = GaugeMetricFamily(
            "promptcache_cost_saved", "cost_without_cache minus cost", labels=labels
        )
        for (model, tenant), totals in pairs.items():
            saved.add_metric([model, tenant], float(totals.saved))
        yield saved
        requests = CounterMetricFamily(
            "promptcache_accounted_requests",
            "Requests priced, by response-cache outcome",
            labels=[*labels, "response_cache"],
        )
        tokens = CounterMetricFamily(
            "promptcache_accounted_prompt_tokens",
            "Prompt tokens priced, by how they were billed",
            labels=[*labels, "kind"],
        )
        output = CounterMetricFamily(
            "promptcache_accounted_output_tokens", "Output tokens priced", labels=labels
        )
        for (model, tenant), t in pairs.items():
            requests.add_metric([model, tenant, "hit"], t.response_cache_hits)
            requests.add_metric([model, tenant, "miss"], t.requests - t.response_cache_hits)
            for kind, value in (
                ("input", t.input_tokens),
                ("cache_read", t.cache_read_tokens),
                ("cache_write_5m", t.cache_write_5m_tokens),
                ("cache_write_1h", t.cache_write_1h_tokens),
                ("response_cache", t.response_cache_prompt_tokens),
            ):
                tokens.add_metric([model, tenant, kind], value)
            output.add_metric([model, tenant], t.output_tokens)
        yield from (requests, tokens, output)
        overall = CostTotals()
        for totals in pairs.values():
            overall.merge(totals)
        yield GaugeMetricFamily(
            "promptcache_saved_ratio",
            "Share of the no-cache cost saved by caching (0..1), all requests",
            value=overall.saved_percent / 100,
        )
        yield GaugeMetricFamily(
            "promptcache_hit_ratio_requests",
            "Share of requests answered by the response cache (0..1)",
            value=overall.hit_ratio_requests,
        )
        yield GaugeMetricFamily(
            "promptcache_hit_ratio_prompt_tokens",
            "Share of prompt tokens not computed thanks to either cache (0..1)",
            value=overall.hit_ratio_prompt_tokens,
        )


__all__ = [
    "COST_HEADER",
    "COST_WITHOUT_CACHE_HEADER",
    "CostLedger",
    "CostObserver",
    "CostTotals",
    "RequestCost",
    "request_cost",
]
