"""Counts of the upstream's attempts: how many went well, were tried again, or failed,
and why each retry was made.

One :class:`AttemptTally` per :class:`~promptcache.engine.upstream.transport.UpstreamSender`
(shared by an engine's per-request copies); ``/metrics``
(``promptcache_upstream_attempts_total{outcome}``,
``promptcache_upstream_retries_total{reason}``) and ``/v1/cache/stats``
(``engine.upstream``) read it as :class:`AttemptCounts` through
:func:`attempt_counts`, summed over the replicas of a replica engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import httpx


def transport_reason(error: httpx.HTTPError) -> str:
    """The retry reason of a transport failure: ``timeout``, ``connect`` or ``dropped``
    (the connection closed or failed while the request or its answer was under way)."""
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "connect"
    return "dropped"


@dataclass(frozen=True)
class AttemptCounts:
    """How the upstream's attempts went: ``attempts`` by outcome (``ok``: a 2xx answer,
    ``retried``: failed and tried again, ``failed``: failed and given to the caller),
    ``retries`` by reason (the status code, ``connect``, ``timeout``, ``dropped``)."""

    attempts: Mapping[str, int] = field(default_factory=dict)
    retries: Mapping[str, int] = field(default_factory=dict)

    def __add__(self, other: AttemptCounts) -> AttemptCounts:
        return AttemptCounts(
            attempts=dict(Counter(self.attempts) + Counter(other.attempts)),
            retries=dict(Counter(self.retries) + Counter(other.retries)),
        )


class AttemptTally:
    """The running counts of one sender (shared by an engine's bound copies)."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()

    def snapshot(self) -> AttemptCounts:
        return AttemptCounts(attempts=dict(self.attempts), retries=dict(self.retries))


@runtime_checkable
class CountsAttempts(Protocol):
    """An engine that counts its upstream attempts (an upstream engine, replicas of one)."""

    def upstream_attempts(self) -> AttemptCounts: ...


def attempt_counts(engine: object) -> Callable[[], AttemptCounts] | None:
    """The reader of ``engine``'s attempt counts, or None for an engine with no upstream."""
    return engine.upstream_attempts if isinstance(engine, CountsAttempts) else None
