"""Proxying canonical requests to upstream providers and engine replicas.

``engine.py`` holds :class:`UpstreamEngine` (one provider URL); the modules
beside it hold what it is built from.
"""

from promptcache.engine.upstream.engine import (
    DIALECTS,
    REDACTED,
    Dialect,
    UpstreamConfig,
    UpstreamEngine,
    error_from_response,
    scrub,
)

__all__ = [
    "DIALECTS",
    "REDACTED",
    "Dialect",
    "UpstreamConfig",
    "UpstreamEngine",
    "error_from_response",
    "scrub",
]
