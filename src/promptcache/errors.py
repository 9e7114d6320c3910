"""Every exception promptcache raises on purpose, and the HTTP status each maps to.

    PromptCacheError
    ├── RequestError          400  invalid request (schema, breakpoints, parameters)
    ├── AuthenticationError   401  missing or wrong API key
    ├── ModelNotFoundError    404  the model is not served here
    ├── PayloadTooLargeError  413  request body over the limit
    ├── UnsupportedMediaTypeError 415  the body is not JSON (Content-Type)
    ├── OverloadedError       429  the engine queue is full
    ├── InternalError         500  a fault inside promptcache, contained to one request
    ├── UpstreamError         502  the upstream provider failed (status kept)
    ├── RequestTimeoutError   504  the request ran past the server's deadline
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


class UnsupportedMediaTypeError(PromptCacheError):
    status_code = 415
    error_type = "invalid_request_error"


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


class InternalError(PromptCacheError):
    """Something failed inside promptcache while serving one request.

    The message carries ``request_id`` (also logged with the traceback) so a
    report can be matched to the log; it never carries the failure's own text,
    which may quote the request.
    """

    status_code = 500
    error_type = "api_error"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"The server failed while handling this request (request id {request_id}); "
            "the failure is logged under that id."
        )
        self.request_id = request_id


class RequestTimeoutError(PromptCacheError):
    """The request did not finish within the server's deadline (``--request-timeout``)."""

    status_code = 504
    error_type = "timeout_error"


def is_interpreter_exit(exc: BaseException) -> bool:
    """Whether ``exc`` is the interpreter's own way out, which no boundary may swallow.

    Everything else -- ``Exception`` and foreign ``BaseException`` s such as
    pyo3's ``PanicException`` from a Rust library -- belongs to one request.
    """
    return isinstance(exc, SystemExit | KeyboardInterrupt | GeneratorExit)


class StoreError(PromptCacheError):
    """A store cannot be opened or used; the message names the file/URL and the fix."""
