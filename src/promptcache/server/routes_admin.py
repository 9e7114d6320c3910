"""Everything that is not a chat call: models, cache stats and clearing, health, metrics.

``GET /v1/models`` answers in Anthropic's format when the request carries an
``anthropic-version`` header (as the Anthropic SDK always does), else in
OpenAI's. ``GET /healthz`` and ``/readyz`` (``health.py``) need no key, so
load balancers can reach them;
``GET /metrics`` needs none either unless the server has a metrics key
(``--metrics-key``), which Prometheus then sends as a Bearer token.
``DELETE /v1/cache`` can be switched off (``--no-admin-endpoints``).

Nothing here shows a secret: the store's ``url`` in the stats is already
redacted by the store (:func:`promptcache.store._url.redact_url`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from promptcache.dialects.openai import OPENAI
from promptcache.engine.base import Engine, ReplicaFleetSnapshot
from promptcache.engine.upstream.attempts import attempt_counts
from promptcache.engine.upstream.credentials import call_from_headers
from promptcache.errors import PermissionDeniedError, PromptCacheError
from promptcache.response_cache import CacheStatus, ResponseCache
from promptcache.server.auth import KeyRing, MetricsGuard
from promptcache.server.config import ServerConfig
from promptcache.server.metrics import CONTENT_TYPE, ServerMetrics
from promptcache.server.models import ModelCatalog, listed_models
from promptcache.server.responses import error_response, json_response
from promptcache.server.routes import dialect_for_headers
from promptcache.store import redact_url

StatsSection = Callable[[str | None], Any]
"""A named part of ``GET /v1/cache/stats``, given the tenant to report on (None: all)."""


@dataclasses.dataclass(kw_only=True)
class AdminContext:
    engine: Engine
    cache: ResponseCache | None
    keyring: KeyRing
    catalog: ModelCatalog
    metrics: ServerMetrics
    stats_sections: Mapping[str, StatsSection]
    config: ServerConfig
    """For the admin switches: ``admin_endpoints`` and ``metrics_key``."""


def _engine_figures(engine: Engine) -> dict[str, Any]:
    figures: dict[str, Any] = {"type": type(engine).__name__}
    for name in ("queue_depth", "running", "max_queue", "workers"):
        value = getattr(engine, name, None)
        if isinstance(value, int):
            figures[name] = value
    return figures


def replica_figures(fleet: ReplicaFleetSnapshot) -> dict[str, Any]:
    """``engine.replicas`` of ``GET /v1/cache/stats``: each replica's counts and cached share."""
    return {
        "load_factor": fleet.load_factor,
        "moved_for_load": fleet.moved_for_load,
        "moved_for_failure": fleet.moved_for_failure,
        "refused_none_healthy": fleet.unavailable,
        "replicas": [
            {**dataclasses.asdict(r), "cached_share": round(r.cached_share, 6)}
            for r in fleet.replicas
        ],
    }


def cache_stats(ctx: AdminContext, tenant: str | None = None) -> dict[str, Any]:
    """The body of ``GET /v1/cache/stats``.

    ``tenant``: report the sections (costs) for that tenant only; None for every
    tenant. The cache and engine figures are the server's whole: operational
    counts that name no tenant.
    """
    outcomes = ctx.metrics.cache_outcomes
    lookups = outcomes[CacheStatus.HIT] + outcomes[CacheStatus.MISS]
    body: dict[str, Any] = {
        "response_cache": None,
        "requests": {
            "hit": outcomes[CacheStatus.HIT],
            "miss": outcomes[CacheStatus.MISS],
            "bypass": outcomes[CacheStatus.BYPASS],
            "hit_ratio": round(outcomes[CacheStatus.HIT] / lookups, 6) if lookups else 0.0,
        },
        "prefix_cache": None,
        "engine": _engine_figures(ctx.engine),
        "scope": {"tenant": tenant} if tenant is not None else "all",
    }
    if ctx.cache is not None:
        store = ctx.cache.store.stats()
        body["response_cache"] = {
            **dataclasses.asdict(store),
            # Stores redact their own URL; this also covers one that does not.
            "url": redact_url(store.url),
            "hit_ratio": round(store.hit_ratio, 6),
            # This process's misses across the gateways on the store (None: it cannot lock).
            "cross_process": ctx.cache.coalescing_counts(),
        }
    snapshot = ctx.engine.prefix_stats()
    if snapshot is not None:
        prefix = dataclasses.asdict(snapshot)
        queried = snapshot.tokens_queried
        prefix["token_hit_ratio"] = round(snapshot.tokens_hit / queried, 6) if queried else 0.0
        named = ctx.engine.named_prefixes
        if named is not None:  # pinned by /v1/cache/prefixes and --warm, every tenant's
            prefix["named_prefixes"] = len(named)
        body["prefix_cache"] = prefix
    fleet = ctx.engine.replica_stats()
    if fleet is not None:
        body["engine"]["replicas"] = replica_figures(fleet)
    upstream = attempt_counts(ctx.engine)
    if upstream is not None:  # attempts by outcome, retries by reason (as in /metrics)
        body["engine"]["upstream"] = dataclasses.asdict(upstream())
    for name, section in ctx.stats_sections.items():
        body[name] = section(tenant)
    return body


def register(app: Starlette, ctx: AdminContext) -> None:
    metrics_guard = MetricsGuard(ctx.config.metrics_key)

    async def models(request: Request) -> Response:
        dialect = dialect_for_headers(request.headers)
        try:
            ctx.keyring.tenant(request.headers)
            timeout = ctx.config.request_timeout
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            call = call_from_headers(
                request.headers,
                api_key=ctx.keyring.forwarded_key(request.headers),
                deadline=deadline,
            )
            listed = await listed_models(ctx.catalog, ctx.engine, call)
        except PromptCacheError as error:
            return error_response(dialect, error)
        return json_response(dialect.render_models(listed))

    async def stats(request: Request) -> Response:
        try:
            tenant = ctx.keyring.tenant(request.headers)
        except PromptCacheError as error:
            return error_response(OPENAI, error)
        # A tenant's key shows its own spend; another tenant's is not its business.
        scope = None if ctx.keyring.sees_all_tenants(request.headers) else tenant
        # Store stats may touch SQLite or Redis: keep that off the event loop.
        return json_response(await asyncio.to_thread(cache_stats, ctx, scope))

    async def clear(request: Request) -> Response:
        try:
            if not ctx.config.admin_endpoints:
                raise PermissionDeniedError(
                    "Clearing the cache over HTTP is turned off on this server "
                    "(--no-admin-endpoints); run `promptcache clear --store URL` instead."
                )
            ctx.keyring.require_admin(request.headers)
        except PromptCacheError as error:
            return error_response(OPENAI, error)
        responses = 0
        if ctx.cache is not None:
            responses = await ctx.cache.store.aclear()
        await asyncio.to_thread(ctx.engine.clear_prefix_cache)
        return json_response({"cleared": {"responses": responses, "prefix_cache": True}})

    async def metrics(request: Request) -> Response:
        try:
            metrics_guard.check(request.headers)
        except PromptCacheError as error:
            refused = error_response(OPENAI, error)
            refused.headers["www-authenticate"] = "Bearer"
            return refused
        body = await asyncio.to_thread(ctx.metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    app.add_route("/v1/models", models, methods=["GET"])
    app.add_route("/v1/cache/stats", stats, methods=["GET"])
    app.add_route("/v1/cache", clear, methods=["DELETE"])
    app.add_route("/metrics", metrics, methods=["GET"])
