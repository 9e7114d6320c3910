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

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from promptcache.engine.base import Engine

REDACTED = "***"

KeyHeader = Literal["authorization", "x-api-key"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamCall:
    """One request's credentials and deadline for the upstream.

    ``api_key``: the caller's provider key, sent instead of the server's
    (``--upstream-key-mode forward``); None sends the server's own.
    ``deadline``: the event loop's time (``loop.time()``) by which the request
    must be answered; retries never wait past it. None: no deadline.
    ``whole``: the caller takes only the final Result (a client that did not ask
    for a stream), so the engine may fetch it as one body rather than as events.
    ``key_header``: the header the caller sent ``api_key`` in. Toward Anthropic it
    goes on in the same one: an OAuth token (``sk-ant-oat...``, Claude Code's) is
    only accepted as ``Authorization: Bearer``, an API key as either.
    ``anthropic_beta``: the caller's ``anthropic-beta`` header (the betas it asked
    for, e.g. ``oauth-2025-04-20``), sent on to an Anthropic upstream with this
    request only.
    """

    api_key: str | None = field(default=None, repr=False)
    deadline: float | None = None
    whole: bool = False
    key_header: KeyHeader = "x-api-key"
    anthropic_beta: str | None = None

    def __repr__(self) -> str:
        shown = "None" if self.api_key is None else REDACTED
        return (
            f"UpstreamCall(api_key={shown}, deadline={self.deadline!r}, whole={self.whole}, "
            f"key_header={self.key_header!r}, anthropic_beta={self.anthropic_beta!r})"
        )


def call_from_headers(
    headers: Mapping[str, str],
    *,
    api_key: str | None,
    deadline: float | None,
    whole: bool = False,
) -> UpstreamCall:
    """The :class:`UpstreamCall` of a request with these HTTP ``headers``: ``api_key``
    (the caller's key to forward, or None) in the header it came in, and the caller's
    ``anthropic-beta``."""
    sent_as_x_api_key = api_key is not None and (headers.get("x-api-key") or "").strip() == api_key
    beta = (headers.get("anthropic-beta") or "").strip()
    return UpstreamCall(
        api_key=api_key,
        deadline=deadline,
        whole=whole,
        key_header="x-api-key" if sent_as_x_api_key or api_key is None else "authorization",
        anthropic_beta=beta or None,
    )


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


def auth_headers(dialect: str, key: str, header: KeyHeader = "x-api-key") -> dict[str, str]:
    """The header ``key`` travels in to a provider of ``dialect``: toward Anthropic the
    one the caller used (``header``: ``x-api-key``, or ``authorization`` as Bearer,
    which OAuth tokens need), toward OpenAI-style APIs always ``Authorization: Bearer``."""
    if dialect == "anthropic" and header == "x-api-key":
        return {"x-api-key": key}
    return {"authorization": f"Bearer {key}"}


def merged_betas(*values: str | None) -> str | None:
    """``anthropic-beta`` values joined, each beta once in first-seen order (the server's
    configured ones and a caller's), or None when there are none."""
    seen: dict[str, None] = {}
    for value in values:
        for beta in (value or "").split(","):
            if beta.strip():
                seen.setdefault(beta.strip(), None)
    return ",".join(seen) or None


def beta_scoped_key(key: str, betas: str) -> str:
    """The response-cache key of a request sent with ``betas`` (its ``anthropic-beta``):
    the same ``pc1:sha256:<hex>`` form over ``key`` and the betas (a set: order and
    repeats do not count), so an answer made with a beta (interleaved thinking, a
    longer output) is never served to the same request made without it."""
    chosen = ",".join(sorted({beta.strip() for beta in betas.split(",") if beta.strip()}))
    if not chosen:
        return key
    tag, _, _ = key.rpartition(":")
    digest = hashlib.sha256(f"{key}\nanthropic-beta:{chosen}".encode()).hexdigest()
    return f"{tag}:{digest}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
