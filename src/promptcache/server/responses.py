"""HTTP response helpers shared by the routes: JSON bodies, error bodies, SSE streams."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from promptcache.dialects.base import Dialect
from promptcache.errors import PromptCacheError

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def json_bytes(body: Any) -> bytes:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (only an error message quoting input can carry one,
        # since such input is refused): ASCII escapes keep the JSON valid.
        return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        json_bytes(body), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(dialect: Dialect, error: PromptCacheError) -> Response:
    status, body = dialect.render_error(error)
    headers = retry_headers(error, status)
    extra = getattr(dialect, "error_headers", None)  # Bedrock's x-amzn-ErrorType
    if extra is not None:
        headers.update(extra(error))
    return json_response(body, status=status, headers=headers)


def retry_headers(error: PromptCacheError, status: int) -> dict[str, str]:
    """``Retry-After`` for an error answer: the provider's own wait when the error carries
    one (a 429, or the 502/503 of an upstream that asked for it), in whole seconds rounded
    up (the header takes no fraction); else 1 s on a 429 (promptcache's own queue is full)."""
    if error.retry_after is not None:
        return {"retry-after": str(math.ceil(error.retry_after))}
    return {"retry-after": "1"} if status == 429 else {}


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always closes its body iterator.

    Starlette cancels the sending task when the client disconnects, which can
    leave the body generator suspended until garbage collection; closing it
    here runs its ``finally`` at once, so the generation is cancelled and its
    KV references are released promptly.
    """

    def __init__(self, content: AsyncIterator[bytes], *, headers: Mapping[str, str]) -> None:
        super().__init__(
            content, headers={**SSE_HEADERS, **headers}, media_type="text/event-stream"
        )
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
