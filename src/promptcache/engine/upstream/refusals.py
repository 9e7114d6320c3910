"""An upstream's error response as promptcache's own exception: the status mapped, the
provider's message kept but scrubbed of every credential, the upstream named."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import httpx

from promptcache.engine.upstream.credentials import scrub
from promptcache.engine.upstream.transport import attempts_text
from promptcache.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PromptCacheError,
    RequestError,
    UpstreamError,
)

_STATUS_ERRORS: Mapping[int, Callable[[str], PromptCacheError]] = {
    400: RequestError,
    422: RequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: ModelNotFoundError,
    413: PayloadTooLargeError,
    429: OverloadedError,
    529: OverloadedError,
}


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])  # vLLM's and SGLang's {"object": "error", "message": ...}
    return response.text.strip() or response.reason_phrase


def error_from_response(
    response: httpx.Response,
    *,
    secrets: Iterable[str] = (),
    upstream: str | None = None,
    attempts: int = 1,
) -> PromptCacheError:
    """The promptcache exception for an upstream error response, its message kept but
    scrubbed of ``secrets``: a provider may quote the key it refused ("Incorrect API
    key provided: sk-..."). ``upstream`` (its host) and ``attempts`` go into the
    message of a failure that is the upstream's, not the request's."""
    status = response.status_code
    message = scrub(_error_message(response), secrets)
    make = _STATUS_ERRORS.get(status)
    if make is not None:
        return make(message + attempts_text(attempts) if status in (429, 529) else message)
    who = f"The upstream {upstream}" if upstream else "The upstream"
    return UpstreamError(
        f"{who} answered {status}: {message}{attempts_text(attempts)}", upstream_status=status
    )
