"""Every exception promptcache raises on purpose.

    PromptCacheError               (anything else promptcache meant to raise)
    ├── RequestError               invalid request (schema, breakpoints, parameters)
    ├── AuthenticationError        missing or wrong API key
    ├── PermissionDeniedError      the caller may not do this here, whatever its key
    ├── ModelNotFoundError         the model is not served here
    ├── PayloadTooLargeError       request body over the limit
    ├── UnsupportedMediaTypeError  the body is not JSON (Content-Type)
    ├── OverloadedError            the engine queue is full
    ├── InternalError              a fault inside promptcache, contained to one request
    ├── UpstreamError              the upstream provider failed (its status kept)
    │   └── UpstreamUnavailableError   no upstream replica is healthy (503)
    ├── RequestTimeoutError        the request ran past the server's deadline
    └── StoreError                 a response-cache store is unusable (names the fix)

    ImportError
    └── MissingExtraError          an optional dependency is not installed; names the
                                   ``pip install 'promptcache[...]'`` that fixes it
                                   (:mod:`promptcache._extras`)

These are the library's own: they know nothing of HTTP. The server's one
table of HTTP statuses is :data:`promptcache.dialects.base.ERROR_STATUS`, and
each dialect renders an error in its own body; nothing else should reach a
client as a 500.
"""

from __future__ import annotations


class PromptCacheError(Exception):
    """The root of promptcache's errors; ``param`` names the offending field when known."""

    retry_after: float | None = None
    """Seconds the caller should wait before trying again, when a provider said so
    (its ``Retry-After``); the server answers with it as its own ``Retry-After``."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class RequestError(PromptCacheError, ValueError):
    """The request is invalid; ``param`` names the offending field (dotted path) when known."""


class AuthenticationError(PromptCacheError):
    """No API key, or one this server does not know."""


class PermissionDeniedError(PromptCacheError):
    """The caller may not do this on this server, whatever key it sends."""


class ModelNotFoundError(PromptCacheError):
    """The requested model (or alias) is not served here."""


class PayloadTooLargeError(PromptCacheError):
    """The request body is over the server's limit (``--max-body-bytes``)."""


class UnsupportedMediaTypeError(PromptCacheError):
    """The body is declared as something other than JSON (``Content-Type``)."""


class OverloadedError(PromptCacheError):
    """The engine's queue is full (or the upstream said it is overloaded)."""


class UpstreamError(PromptCacheError):
    """The upstream provider failed; ``upstream_status`` is its HTTP status, when it gave one."""

    def __init__(
        self, message: str, *, upstream_status: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message, param=param)
        self.upstream_status = upstream_status


class UpstreamUnavailableError(UpstreamError):
    """No replica of the upstream can take the request: every one is out (503)."""


class InternalError(PromptCacheError):
    """Something failed inside promptcache while serving one request.

    The message carries ``request_id`` (also logged with the traceback) so a
    report can be matched to the log; it never carries the failure's own text,
    which may quote the request.
    """

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"The server failed while handling this request (request id {request_id}); "
            "the failure is logged under that id."
        )
        self.request_id = request_id


class RequestTimeoutError(PromptCacheError):
    """The request did not finish within the server's deadline (``--request-timeout``)."""


def is_interpreter_exit(exc: BaseException) -> bool:
    """Whether ``exc`` is the interpreter's own way out, which no boundary may swallow.

    Everything else -- ``Exception`` and foreign ``BaseException`` s such as
    pyo3's ``PanicException`` from a Rust library -- belongs to one request.
    """
    return isinstance(exc, SystemExit | KeyboardInterrupt | GeneratorExit)


class StoreError(PromptCacheError):
    """A store cannot be opened or used; the message names the file/URL and the fix."""
