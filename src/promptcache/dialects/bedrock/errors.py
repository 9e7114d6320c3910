"""promptcache's errors as Bedrock answers them: a status, ``x-amzn-ErrorType`` and
``{"message": ...}``, so botocore raises the matching ``ClientError`` code.

Codes and statuses are the ones in the bedrock-runtime service model; an
error type Bedrock does not have (a body over the size limit, a non-JSON
content type) is a ``ValidationException`` with the HTTP status promptcache
gives it elsewhere.
"""

from __future__ import annotations

from typing import Any

from promptcache.dialects.base import error_status
from promptcache.errors import AuthenticationError, PromptCacheError

_CODES: dict[int, tuple[str, int]] = {
    400: ("ValidationException", 400),
    401: ("UnrecognizedClientException", 403),
    403: ("AccessDeniedException", 403),
    404: ("ResourceNotFoundException", 404),
    405: ("ValidationException", 405),
    413: ("ValidationException", 413),
    415: ("ValidationException", 415),
    429: ("ThrottlingException", 429),
    500: ("InternalServerException", 500),
    502: ("ModelErrorException", 424),
    503: ("ServiceUnavailableException", 503),
    504: ("ModelTimeoutException", 408),
}


class BedrockAuthError(AuthenticationError):
    """A SigV4 failure, with Bedrock's own code (``InvalidSignatureException``...)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def error_code(error: PromptCacheError) -> tuple[str, int]:
    """Bedrock's ``(error code, HTTP status)`` for ``error``."""
    if isinstance(error, BedrockAuthError):
        return error.code, 403
    status = error_status(error)
    return _CODES.get(
        status, ("ValidationException" if status < 500 else "InternalServerException", status)
    )


def render_error(error: PromptCacheError) -> tuple[int, dict[str, Any]]:
    _, status = error_code(error)
    return status, {"message": error.message}


def error_headers(error: PromptCacheError) -> dict[str, str]:
    code, _ = error_code(error)
    return {"x-amzn-errortype": code}


def stream_member(error: PromptCacheError) -> str:
    """The event-stream member for an in-band error (``throttlingException``...)."""
    code, _ = error_code(error)
    members = {
        "ValidationException": "validationException",
        "ThrottlingException": "throttlingException",
        "ServiceUnavailableException": "serviceUnavailableException",
        "InternalServerException": "internalServerException",
    }
    return members.get(code, "modelStreamErrorException")
