"""The app factory: ``create_app(config, engine=..., cache=...) -> FastAPI``.

It wires the pieces and nothing else: the routes of both dialects share one
:class:`~promptcache.server.flow.ChatFlow`; admin routes read the same engine,
cache and metrics. Routes are plain Starlette routes (no FastAPI dependency
injection or body models) because the response-cache hit path must stay at
well under a millisecond of server time. Errors raised outside the flow
(unknown path, wrong method, a bug) are still answered in the body format of
the dialect the path belongs to.

The caller owns the engine and the cache: the app never closes them, so one
loaded model can serve several apps (tests) and ``promptcache serve`` closes
them after the server stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from promptcache.engine.base import Engine
from promptcache.engine.threaded import ThreadedEngine
from promptcache.errors import PromptCacheError, RequestError
from promptcache.response_cache import ResponseCache
from promptcache.server import health, routes_admin, routes_anthropic, routes_openai
from promptcache.server.auth import KeyRing
from promptcache.server.config import ServerConfig
from promptcache.server.containment import ContainErrors
from promptcache.server.dialect import dialect_for_path
from promptcache.server.flow import ChatFlow, RequestObserver
from promptcache.server.metrics import ServerMetrics
from promptcache.server.models import ModelCatalog
from promptcache.server.responses import error_response
from promptcache.server.routes_admin import AdminContext, StatsSection

logger = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class HTTPStatusError(PromptCacheError):
    """A framework-level HTTP error (no route, wrong method) in promptcache's error form."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = _ERROR_TYPES.get(status_code, "api_error")


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
    )
    keyring = KeyRing(api_keys=config.api_keys, admin_keys=config.admin_keys)
    catalog = ModelCatalog(engine.models())
    flow = ChatFlow(
        config=config,
        engine=engine,
        cache=cache,
        keyring=keyring,
        catalog=catalog,
        metrics=metrics,
        observers=observers,
    )
    routes_openai.register(app, flow)
    routes_anthropic.register(app, flow)
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
    _install_error_handlers(app)
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


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "Internal error."
        if status == 404:
            detail = f"No route for {request.method} {request.url.path}."
        elif status == 405:
            detail = f"Method {request.method} is not allowed on {request.url.path}."
        error = HTTPStatusError(str(detail), status_code=status)
        return error_response(dialect_for_path(request.url.path), error)

    async def validation_error(request: Request, exc: Exception) -> Response:
        return error_response(dialect_for_path(request.url.path), RequestError(str(exc)))

    async def promptcache_error(request: Request, exc: Exception) -> Response:
        error = exc if isinstance(exc, PromptCacheError) else PromptCacheError(str(exc))
        return error_response(dialect_for_path(request.url.path), error)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(PromptCacheError, promptcache_error)
    # Not an Exception handler: Starlette re-raises after those, closing the connection.
    app.add_middleware(ContainErrors)
