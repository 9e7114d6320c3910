"""Liveness and readiness that tell the truth, and a gauge per component.

* ``GET /healthz`` -- liveness: the process and its event loop answer. It
  checks nothing else on purpose: a load balancer that restarts a live
  process because its Redis is down only makes the outage worse.
* ``GET /readyz`` -- readiness, with a JSON body naming each component:

  - ``engine``: workers alive, not stalled (requests running but no event for
    ``stall_seconds``), queue below its bound. Unwell: 503.
  - ``store``: the response-cache store answers a probe read within
    :data:`STORE_PROBE_SECONDS`. Unwell: ``"degraded"`` with a 200 -- the
    server still answers every request, only without the cache, and taking
    every replica out because a shared Redis is down would stop the service.
  - draining (SIGTERM received): 503, so balancers stop sending new work.

* ``promptcache_component_up{component="engine"|"store"}`` is 1 or 0 at scrape
  time, from the same checks (the store gauge from its last call rather than
  a probe, so scrapes cost nothing).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from promptcache.engine.base import Engine
from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.metrics import ServerMetrics
from promptcache.server.responses import json_response

STORE_PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class ComponentState:
    up: bool
    detail: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {"up": self.up, **self.detail}


def engine_state(engine: Engine) -> ComponentState:
    if isinstance(engine, ThreadedEngine):
        health = engine.health()
        return ComponentState(health.ok, dataclasses.asdict(health))
    # An upstream engine has no local workers; its failures are each request's 502.
    return ComponentState(True, {"type": type(engine).__name__})


def store_seen_state(cache: ResponseCache | None) -> ComponentState:
    if cache is None:
        return ComponentState(True, {"enabled": False})
    return ComponentState(
        cache.store_available and cache.store.available,
        {"enabled": True, "failures": cache.store_failures},
    )


async def probe_store(cache: ResponseCache | None) -> ComponentState:
    """A probe read, bounded in time; a failure marks the cache degraded."""
    if cache is None:
        return store_seen_state(cache)
    try:
        answered = await asyncio.wait_for(asyncio.to_thread(cache.store.ping), STORE_PROBE_SECONDS)
    except Exception as exc:  # any failure of the store is the answer, not an error here
        cache.store_available = False
        seen = store_seen_state(cache)
        return ComponentState(False, {**seen.detail, "error": type(exc).__name__})
    cache.store_available = answered
    detail = store_seen_state(cache).detail
    return ComponentState(answered, detail if answered else {**detail, "error": "no answer"})


class ComponentCollector(Collector):
    def __init__(self, engine: Engine, cache: ResponseCache | None) -> None:
        self._engine = engine
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "promptcache_component_up",
            "Whether a component is healthy (store: its last call succeeded)",
            labels=["component"],
        )
        gauge.add_metric(["engine"], float(engine_state(self._engine).up))
        gauge.add_metric(["store"], float(store_seen_state(self._cache).up))
        yield gauge


def register(
    app: Starlette,
    *,
    engine: Engine,
    cache: ResponseCache | None,
    metrics: ServerMetrics,
    models: Callable[[], list[str]],
) -> None:
    """Add ``/healthz`` and ``/readyz``; ``app.state.draining`` (set on SIGTERM) fails readiness."""
    app.state.draining = False
    metrics.registry.register(ComponentCollector(engine, cache))

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok", "models": models()})

    async def readyz(request: Request) -> Response:
        engine_now = engine_state(engine)
        store_now = await probe_store(cache)
        draining = bool(request.app.state.draining)
        if draining or not engine_now.up:
            status = "draining" if draining else "unready"
        else:
            status = "ok" if store_now.up else "degraded"
        body = {
            "status": status,
            "components": {"engine": engine_now.body(), "store": store_now.body()},
        }
        return json_response(body, status=200 if status in ("ok", "degraded") else 503)

    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
