"""Prometheus metrics of one server app, in its own :class:`CollectorRegistry`.

A registry per app (not the process-global one) so several apps can live in
one process (tests, embedding) without duplicate-metric errors. Engine
figures (queue depth, prefix cache) are read at scrape time rather than
pushed on every request, which keeps the response-cache hit path lean.
Other components (cost accounting) register their own metrics on
:attr:`ServerMetrics.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from promptcache.response_cache import CacheStatus
from promptcache.result import PrefixCacheSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _PrefixCacheCollector(Collector):
    def __init__(self, snapshot: Callable[[], PrefixCacheSnapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if snap is None:
            return
        counters = (
            ("promptcache_prefix_tokens_queried", "Prompt tokens looked up", snap.tokens_queried),
            ("promptcache_prefix_tokens_hit", "Prompt tokens served from KV", snap.tokens_hit),
            ("promptcache_kv_evictions", "KV blocks evicted", snap.evictions),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        gauges = (
            ("promptcache_kv_bytes_used", "KV cache bytes held", snap.kv_bytes_used),
            ("promptcache_kv_bytes_pinned", "KV bytes pinned by breakpoints", snap.kv_bytes_pinned),
            ("promptcache_kv_bytes_budget", "KV cache byte budget", snap.kv_bytes_budget),
            ("promptcache_kv_blocks_used", "KV blocks held", snap.blocks_used),
            ("promptcache_kv_blocks_pinned", "KV blocks pinned", snap.blocks_pinned),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)


class ServerMetrics:
    """The server's counters and histograms (see the module docstring)."""

    def __init__(
        self,
        *,
        prefix_snapshot: Callable[[], PrefixCacheSnapshot | None],
        queue_depth: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "promptcache_requests",
            "HTTP requests by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.response_cache = Counter(
            "promptcache_response_cache",
            "Response-cache outcomes (hit, miss, bypass)",
            ["result"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "promptcache_time_to_first_token_seconds",
            "Time from request to the first generated token (engine requests only)",
            ["route"],
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "promptcache_engine_queue_depth",
            "Requests waiting for the engine",
            registry=self.registry,
        )
        if queue_depth is not None:
            self.queue_depth.set_function(lambda: float(queue_depth()))
        self.registry.register(_PrefixCacheCollector(prefix_snapshot))
        self.cache_outcomes = dict.fromkeys(CacheStatus, 0)
        """Plain running counts of response-cache outcomes, for ``/v1/cache/stats``."""
        # Pre-bound children: label lookup is the costly part of an increment.
        self._cache_children = {
            status: self.response_cache.labels(result=status.lower()) for status in CacheStatus
        }

    def count_request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def count_cache(self, outcome: CacheStatus) -> None:
        self._cache_children[outcome].inc()
        self.cache_outcomes[outcome] += 1

    def observe_ttft(self, route: str, seconds: float) -> None:
        self.ttft.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
