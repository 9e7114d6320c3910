"""What one request brings to the upstream besides the canonical request: the caller's
own provider key (bring your own key) and its deadline.

The key travels as an :class:`UpstreamCall`, handed to :meth:`BindsCalls.bind`
next to the request -- never inside :class:`~promptcache.request.ChatRequest`,
whose fields feed cache keys, parse memos and logs. The server knows the caller
only by a keyed hash of that key (its tenant, ``server/auth.py``); the key
itself lives for one request, in the bound engine, and is scrubbed from every
message the upstream sends back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from promptcache.engine.base import Engine

REDACTED = "***"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamCall:
    """One request's credentials and deadline for the upstream.

    ``api_key``: the caller's provider key, sent instead of the server's
    (``--upstream-key-mode forward``); None sends the server's own.
    ``deadline``: the event loop's time (``loop.time()``) by which the request
    must be answered; retries never wait past it. None: no deadline.
    ``whole``: the caller takes only the final Result (a client that did not ask
    for a stream), so the engine may fetch it as one body rather than as events.
    """

    api_key: str | None = field(default=None, repr=False)
    deadline: float | None = None
    whole: bool = False

    def __repr__(self) -> str:
        shown = "None" if self.api_key is None else REDACTED
        return f"UpstreamCall(api_key={shown}, deadline={self.deadline!r}, whole={self.whole})"


@runtime_checkable
class BindsCalls(Protocol):
    """An engine that sends each request with its own :class:`UpstreamCall`."""

    def bind(self, call: UpstreamCall) -> Engine:
        """This engine for one request: the caller's key and deadline applied."""
        ...


def bind_call(engine: Engine, call: UpstreamCall) -> Engine:
    """``engine`` bound to ``call`` when it sends with one; any other engine as it is
    (a local model has no provider key to forward and keeps its own deadline)."""
    return engine.bind(call) if isinstance(engine, BindsCalls) else engine


def auth_headers(dialect: str, key: str) -> dict[str, str]:
    """The header ``key`` travels in to a provider of ``dialect``: Anthropic's
    ``x-api-key``, else OpenAI's ``Authorization: Bearer``."""
    if dialect == "anthropic":
        return {"x-api-key": key}
    return {"authorization": f"Bearer {key}"}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
