"""Request body limits: refuse oversized bodies before holding them in memory.

The ``Content-Length`` header is checked first (cheap, and the common case);
the body is then read chunk by chunk and counted, because a chunked request
has no length and a client may lie about it.
"""

from __future__ import annotations

from starlette.requests import Request

from promptcache.errors import PayloadTooLargeError, RequestError


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"Request body is larger than the server's limit of {limit} bytes "
        "(promptcache serve --max-body-bytes)."
    )


async def read_body(request: Request, *, limit: int) -> bytes:
    """The whole request body, or :class:`PayloadTooLargeError` once it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError("Invalid Content-Length header.") from None
        if length > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
