"""Every exception promptcache raises on purpose, and the HTTP status each maps to.

    PromptCacheError
    ├── RequestError          400  invalid request (schema, breakpoints, parameters)
    ├── AuthenticationError   401  missing or wrong API key
    ├── ModelNotFoundError    404  the model is not served here
    ├── PayloadTooLargeError  413  request body over the limit
    ├── OverloadedError       429  the engine queue is full
    ├── UpstreamError         502  the upstream provider failed (status kept)
    └── StoreError                 a response-cache store is unusable (names the fix)

Dialects render these in their own error body; nothing else should reach a
client as a 500.
"""

from __future__ import annotations


class PromptCacheError(Exception):
    status_code = 500
    error_type = "api_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class RequestError(PromptCacheError, ValueError):
    """The request is invalid; ``param`` names the offending field (dotted path) when known."""

    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(PromptCacheError):
    status_code = 401
    error_type = "authentication_error"


class ModelNotFoundError(PromptCacheError):
    status_code = 404
    error_type = "not_found_error"


class PayloadTooLargeError(PromptCacheError):
    status_code = 413
    error_type = "request_too_large"


class OverloadedError(PromptCacheError):
    status_code = 429
    error_type = "rate_limit_error"


class UpstreamError(PromptCacheError):
    status_code = 502
    error_type = "api_error"

    def __init__(
        self, message: str, *, upstream_status: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message, param=param)
        self.upstream_status = upstream_status


class StoreError(PromptCacheError):
    """A store cannot be opened or used; the message names the file/URL and the fix."""
