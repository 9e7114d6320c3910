"""Errors raised outside the chat flow, answered in the body format of the path's dialect.

The statuses come from the one table, :data:`promptcache.dialects.base.ERROR_STATUS`;
an unknown path (404) or a wrong method (405) is an
:class:`~promptcache.dialects.base.HTTPStatusError` carrying the framework's
status, and the dialect the path belongs to writes the body, so even a routing
error reads as the client's SDK expects.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from promptcache.dialects.base import HTTPStatusError
from promptcache.errors import PromptCacheError, RequestError
from promptcache.server.containment import ContainErrors
from promptcache.server.responses import error_response
from promptcache.server.routes import dialect_for_path


def install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "Internal error."
        if status == 404:
            detail = f"No route for {request.method} {request.url.path}."
        elif status == 405:
            detail = f"Method {request.method} is not allowed on {request.url.path}."
        error = HTTPStatusError(str(detail), status=status)
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
