"""Prometheus metrics of one server app, in its own :class:`CollectorRegistry`.

A registry per app (not the process-global one) so several apps can live in
one process (tests, embedding) without duplicate-metric errors. Engine
figures (queue depth, prefix cache) are read at scrape time rather than
pushed on every request, which keeps the response-cache hit path lean.
Other components (cost accounting) register their own metrics on
:attr:`ServerMetrics.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from promptcache.engine.base import ReplicaFleetSnapshot
from promptcache.engine.upstream.attempts import AttemptCounts
from promptcache.response_cache import CacheStatus
from promptcache.result import KVTierSnapshot, PrefixCacheSnapshot

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
        yield from _tier_metrics(snap.tiers)


_TIER_GAUGES = (
    ("bytes_used", "KV bytes held, per tier (ram, disk)"),
    ("bytes_budget", "KV byte budget, per tier"),
    ("blocks", "KV blocks held, per tier"),
    ("read_bytes_per_second", "Disk tier read bandwidth (bytes read / seconds reading)"),
)
_TIER_COUNTERS = (
    ("hits", "KV blocks a match read from this tier"),
    ("promotions", "KV blocks copied up into RAM from disk"),
    ("demotions", "KV blocks sent down (ram: evicted to disk) or written (disk)"),
    ("evictions", "KV blocks evicted from this tier"),
    ("write_queue_drops", "KV blocks not written: the disk writer's queue was full"),
    ("corrupt_blocks", "Disk block files refused by checksum or metadata"),
    ("bytes_read", "Bytes of KV read from this tier"),
    ("read_seconds", "Seconds spent reading KV from this tier"),
)


def _tier_metrics(tiers: tuple[KVTierSnapshot, ...]) -> Iterator[Metric]:
    if not tiers:
        return
    for field, doc in _TIER_GAUGES:
        gauge = GaugeMetricFamily(f"promptcache_kv_tier_{field}", doc, labels=["tier"])
        for tier in tiers:
            gauge.add_metric([tier.tier], float(getattr(tier, field)))
        yield gauge
    for field, doc in _TIER_COUNTERS:
        counter = CounterMetricFamily(f"promptcache_kv_tier_{field}", doc, labels=["tier"])
        for tier in tiers:
            counter.add_metric([tier.tier], float(getattr(tier, field)))
        yield counter


class _CoalescingCollector(Collector):
    """Cross-process coalescing outcomes (leads, follows, takeovers, ...), read at scrape."""

    def __init__(self, counts: Callable[[], Mapping[str, int] | None]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        if counts is None:  # the store cannot lock: nothing coalesces across processes
            return
        family = CounterMetricFamily(
            "promptcache_cross_process_coalescing",
            "Response-cache misses coalesced across the gateways on one store, by outcome",
            labels=["outcome"],
        )
        for outcome, value in counts.items():
            family.add_metric([outcome], value)
        yield family


class _ReplicaCollector(Collector):
    """Per-replica figures of an engine over replicas, labelled ``replica`` (host:port)."""

    def __init__(self, snapshot: Callable[[], ReplicaFleetSnapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        fleet = self._snapshot()
        if fleet is None:
            return
        rows = fleet.replicas
        figures: tuple[tuple[str, str, str, list[float]], ...] = (
            ("counter", "promptcache_replica_requests", "Attempts sent to the replica",
             [r.requests for r in rows]),
            ("counter", "promptcache_replica_errors",
             "Attempts the replica failed (unreachable, 5xx, overloaded)",
             [r.errors for r in rows]),
            ("counter", "promptcache_replica_ejections", "Times the replica was taken out",
             [r.ejections for r in rows]),
            ("counter", "promptcache_replica_prompt_tokens",
             "Prompt tokens of the replica's answers", [r.prompt_tokens for r in rows]),
            ("counter", "promptcache_replica_cached_tokens",
             "Prompt tokens the replica's prefix cache served", [r.cached_tokens for r in rows]),
            ("gauge", "promptcache_replica_cached_token_share",
             "Share of the replica's prompt tokens served from its cache",
             [r.cached_share for r in rows]),
            ("gauge", "promptcache_replica_up", "1 while the replica takes requests",
             [1.0 if r.healthy else 0.0 for r in rows]),
            ("gauge", "promptcache_replica_in_flight", "Requests at the replica now",
             [r.in_flight for r in rows]),
        )  # fmt: skip
        for kind, name, doc, values in figures:
            family: CounterMetricFamily | GaugeMetricFamily = (
                CounterMetricFamily(name, doc, labels=["replica"])
                if kind == "counter"
                else GaugeMetricFamily(name, doc, labels=["replica"])
            )
            for row, value in zip(rows, values, strict=True):
                family.add_metric([row.replica], float(value))
            yield family
        moved = CounterMetricFamily(
            "promptcache_replica_moved",
            "Requests that left their ring replica: the load bound or a failure",
            labels=["reason"],
        )
        moved.add_metric(["load"], fleet.moved_for_load)
        moved.add_metric(["failure"], fleet.moved_for_failure)
        moved.add_metric(["none_healthy"], fleet.unavailable)
        yield moved


class _UpstreamAttemptsCollector(Collector):
    """The upstream's attempts by outcome and retries by reason, read at scrape."""

    def __init__(self, counts: Callable[[], AttemptCounts]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        attempts = CounterMetricFamily(
            "promptcache_upstream_attempts",
            "Requests sent to the upstream, by outcome (ok, retried, failed)",
            labels=["outcome"],
        )
        for outcome in ("ok", "retried", "failed"):
            attempts.add_metric([outcome], counts.attempts.get(outcome, 0))
        yield attempts
        retries = CounterMetricFamily(
            "promptcache_upstream_retries",
            "Upstream attempts tried again, by reason (status code, connect, timeout, dropped)",
            labels=["reason"],
        )
        for reason, value in sorted(counts.retries.items()):
            retries.add_metric([reason], value)
        yield retries


class ServerMetrics:
    """The server's counters and histograms (see the module docstring)."""

    def __init__(
        self,
        *,
        prefix_snapshot: Callable[[], PrefixCacheSnapshot | None],
        queue_depth: Callable[[], int] | None = None,
        coalescing: Callable[[], Mapping[str, int] | None] | None = None,
        replica_snapshot: Callable[[], ReplicaFleetSnapshot | None] | None = None,
        upstream_attempts: Callable[[], AttemptCounts] | None = None,
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
        if replica_snapshot is not None:
            self.registry.register(_ReplicaCollector(replica_snapshot))
        if coalescing is not None:
            self.registry.register(_CoalescingCollector(coalescing))
        if upstream_attempts is not None:
            self.registry.register(_UpstreamAttemptsCollector(upstream_attempts))
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
