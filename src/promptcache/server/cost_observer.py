"""Cost accounting at the server's edge: response headers and Prometheus series.

The maths and the totals are :mod:`promptcache.cost`'s; this module is where
they meet HTTP (``x-promptcache-cost`` headers) and the metrics registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from promptcache.cost.ledger import CostLedger, CostTotals, RequestCost
from promptcache.cost.pricing import format_amount
from promptcache.response_cache import CacheStatus
from promptcache.result import Result, Usage

COST_HEADER = "x-promptcache-cost"
COST_WITHOUT_CACHE_HEADER = "x-promptcache-cost-without-cache"


def cost_headers(charge: RequestCost) -> dict[str, str]:
    """Response headers: ``x-promptcache-cost`` and ``x-promptcache-cost-without-cache``."""
    return {
        COST_HEADER: format_amount(charge.cost),
        COST_WITHOUT_CACHE_HEADER: format_amount(charge.cost_without_cache),
    }


def register_ledger_metrics(ledger: CostLedger, registry: CollectorRegistry) -> None:
    """Expose the ledger's totals on ``registry`` (read at scrape time)."""
    registry.register(_LedgerCollector(ledger))


class CompletedRequestLike(Protocol):
    """What the server's request observer hook passes (``server.flow.CompletedRequest``)."""

    @property
    def model(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def cache(self) -> CacheStatus: ...
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
            response_cache_hit=record.cache == CacheStatus.HIT,
        )
        return cost_headers(charge)


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
    "CostObserver",
    "cost_headers",
    "register_ledger_metrics",
]
