"""The app factory: ``create_app(config, engine=..., cache=...) -> FastAPI``.

It wires the pieces and nothing else: the routes of both dialects share one
:class:`~promptcache.server.flow.ChatFlow`; admin routes read the same engine,
cache and metrics. Routes are plain Starlette routes (no FastAPI dependency
injection or body models) because the response-cache hit path must stay at
well under a millisecond of server time. Errors raised outside the flow
(unknown path, wrong method, a bug) are still answered in the body format of
the dialect the path belongs to (:mod:`promptcache.server.errors`).

The caller owns the engine and the cache: the app never closes them, so one
loaded model can serve several apps (tests) and ``promptcache serve`` closes
them after the server stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from fastapi import FastAPI

from promptcache.engine.base import Engine
from promptcache.engine.threaded import ThreadedEngine
from promptcache.engine.upstream.attempts import attempt_counts
from promptcache.response_cache import ResponseCache
from promptcache.server import health, routes, routes_admin, routes_prefixes
from promptcache.server.auth import KeyRing
from promptcache.server.config import ServerConfig
from promptcache.server.errors import install_error_handlers
from promptcache.server.flow import ChatFlow
from promptcache.server.metrics import ServerMetrics
from promptcache.server.models import ModelCatalog
from promptcache.server.observers import RequestObserver
from promptcache.server.routes_admin import AdminContext, StatsSection

logger = logging.getLogger(__name__)


def create_app(
    config: ServerConfig,
    *,
    engine: Engine,
    cache: ResponseCache | None,
    observers: Sequence[RequestObserver] = (),
    stats_sections: Mapping[str, StatsSection] | None = None,
) -> FastAPI:
    """Build the server app.

    ``observers`` are told about every completed chat request (cost
    accounting plugs in here); ``stats_sections`` add named sections to
    ``GET /v1/cache/stats``. Metrics live in ``app.state.metrics.registry``,
    where other components may register their own collectors.
    """
    app = FastAPI(
        title="promptcache",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    metrics = ServerMetrics(
        prefix_snapshot=engine.prefix_stats,
        queue_depth=_queue_depth_reader(engine),
        replica_snapshot=engine.replica_stats,
        upstream_attempts=attempt_counts(engine),
        coalescing=cache.coalescing_counts if cache is not None else None,
    )
    keyring = KeyRing(
        api_keys=config.api_keys,
        admin_keys=config.admin_keys,
        forward=config.forward_keys,
        secret=config.tenant_secret,
    )
    catalog = ModelCatalog(engine.models(), config.model_aliases)
    flow = ChatFlow(
        config=config,
        engine=engine,
        cache=cache,
        keyring=keyring,
        catalog=catalog,
        metrics=metrics,
        observers=observers,
    )
    routes.register(app, flow)
    routes_prefixes.register(app, flow)
    routes_admin.register(
        app,
        AdminContext(
            engine=engine,
            cache=cache,
            keyring=keyring,
            catalog=catalog,
            metrics=metrics,
            stats_sections=dict(stats_sections or {}),
            config=config,
        ),
    )
    health.register(
        app,
        engine=engine,
        cache=cache,
        metrics=metrics,
        models=lambda: [info.id for info in catalog.models],
    )
    install_error_handlers(app)
    app.state.config = config
    app.state.engine = engine
    app.state.cache = cache
    app.state.metrics = metrics
    app.state.flow = flow
    return app


def _queue_depth_reader(engine: Engine) -> Callable[[], int] | None:
    if isinstance(engine, ThreadedEngine):
        return lambda: engine.queue_depth
    return None
