"""What every dialect shares with the server: the HTTP status of each error.

:data:`ERROR_STATUS` is the one table from promptcache's exceptions
(:mod:`promptcache.errors`, which know nothing of HTTP) to HTTP statuses.
Dialects look an error's status up here and map the status to their own
error ``type`` strings; the server answers with the status the dialect gives.
"""

from __future__ import annotations

from collections.abc import Mapping

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
)

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
