"""The last boundary around the whole app: an unexpected exception is one request's 500.

Starlette answers an exception that no handler took with a 500 and then
re-raises it, so uvicorn drops the connection -- and with it the next request
a keep-alive client had already sent. This middleware sits inside Starlette's
error middleware and turns any exception into the dialect's 500 body itself
(logged with a request id), so the connection stays good. Once a response has
started nothing can be sent in its place: the exception is logged and the
response ends there, which is all HTTP allows.
"""

from __future__ import annotations

import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptcache.errors import InternalError
from promptcache.server.responses import error_response
from promptcache.server.routes import dialect_for_path

logger = logging.getLogger(__name__)


class ContainErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            request_id = f"req_{uuid.uuid4().hex[:24]}"
            logger.exception(
                "request %s: unhandled error on %s %s",
                request_id,
                scope.get("method"),
                scope.get("path"),
            )
            if started:
                return
            response = error_response(
                dialect_for_path(str(scope.get("path", ""))), InternalError(request_id)
            )
            await response(scope, receive, send)
