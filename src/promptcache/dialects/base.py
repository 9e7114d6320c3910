"""What a dialect is to the server, and the HTTP status of each error.

A :class:`Dialect` is one wire API (OpenAI Chat Completions, Anthropic
Messages): an object with a ``name``, the chat path it serves, and the
functions that turn a body into a canonical request and a result, a stream or
an error back into that API's bytes. Each lives in its own subpackage
(``dialects/openai/``, ``dialects/anthropic/``) exporting one such object; the
server registers them (``server/routes.py``) and its flow takes whichever the
route belongs to, so a new dialect is a new subpackage and one registration.

:data:`ERROR_STATUS` is the one table from promptcache's exceptions
(:mod:`promptcache.errors`, which know nothing of HTTP) to HTTP statuses.
Dialects look an error's status up here and map the status to their own
error ``type`` strings; the server answers with the status the dialect gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from promptcache.errors import (
    AuthenticationError,
    InternalError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PromptCacheError,
    RequestError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    UpstreamError,
    UpstreamUnavailableError,
)
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, Result, StreamEvent


class Dialect(Protocol):
    """One wire API, as the server uses it."""

    @property
    def name(self) -> str:
        """``"openai"``, ``"anthropic"``: also the route label in metrics and logs."""
        ...

    @property
    def chat_path(self) -> str:
        """The chat route (``POST``); errors on any path under it use this dialect's body."""
        ...

    @property
    def client_header(self) -> str | None:
        """A header this API's SDKs always send (``anthropic-version``), by which
        ``GET /v1/models`` knows to answer in this dialect; None: none."""
        ...

    def parse_request(self, body: Any, *, tenant: str = "", namespace: str = "") -> ChatRequest:
        """A JSON body as a canonical request; raises ``RequestError`` in the API's wording."""
        ...

    def render_response(self, result: Result, request: ChatRequest) -> dict[str, Any]:
        """The JSON body for a complete (non-streamed) result."""
        ...

    def render_stream(
        self, events: AsyncIterator[StreamEvent], request: ChatRequest
    ) -> AsyncIterator[bytes]:
        """SSE frames for ``events``; an error before the first frame propagates."""
        ...

    def stream_error_frame(self, error: PromptCacheError) -> bytes:
        """The in-band SSE frame for an error once the stream's 200 is sent."""
        ...

    def render_error(self, error: PromptCacheError) -> tuple[int, dict[str, Any]]:
        """The HTTP status (:func:`error_status`) and this API's error body."""
        ...

    def render_models(self, models: list[ModelInfo]) -> dict[str, Any]:
        """The body of ``GET /v1/models``."""
        ...


@dataclass(frozen=True, kw_only=True)
class FunctionDialect:
    """A :class:`Dialect` assembled from its package's module functions (OpenAI,
    Anthropic and GLM are; a dialect that needs per-request state, like Bedrock's,
    is a class of its own)."""

    name: str
    chat_path: str
    client_header: str | None = None
    parse_request: Callable[..., ChatRequest]
    render_response: Callable[[Result, ChatRequest], dict[str, Any]]
    render_stream: Callable[[AsyncIterator[StreamEvent], ChatRequest], AsyncIterator[bytes]]
    stream_error_frame: Callable[[PromptCacheError], bytes]
    render_error: Callable[[PromptCacheError], tuple[int, dict[str, Any]]]
    render_models: Callable[[list[ModelInfo]], dict[str, Any]]


ERROR_STATUS: Mapping[type[PromptCacheError], int] = {
    RequestError: 400,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    ModelNotFoundError: 404,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    OverloadedError: 429,
    InternalError: 500,
    UpstreamError: 502,
    UpstreamUnavailableError: 503,
    RequestTimeoutError: 504,
}
"""Exception class -> HTTP status; a subclass takes its nearest listed base's status,
anything unlisted (``PromptCacheError`` itself, ``StoreError``) is a 500. An
``UpstreamError`` is a 502 whatever the upstream answered (its own status stays
on the error, ``upstream_status``, and in its message)."""


class HTTPStatusError(PromptCacheError):
    """An error that is an HTTP status of its own: the framework's (no route, wrong method)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def error_status(error: PromptCacheError) -> int:
    """The HTTP status ``error`` is answered with."""
    if isinstance(error, HTTPStatusError):
        return error.status
    for cls in type(error).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return 500
