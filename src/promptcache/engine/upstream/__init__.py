"""Proxying canonical requests to upstream providers and engine replicas.

``engine.py`` holds :class:`UpstreamEngine` (one provider URL); the modules
beside it hold what it is built from.
"""

from promptcache.engine.upstream.credentials import REDACTED, UpstreamCall, scrub
from promptcache.engine.upstream.engine import DIALECTS, Dialect, UpstreamConfig, UpstreamEngine
from promptcache.engine.upstream.refusals import error_from_response
from promptcache.engine.upstream.transport import RetryPolicy, UpstreamTimeoutError

__all__ = [
    "DIALECTS",
    "REDACTED",
    "Dialect",
    "RetryPolicy",
    "UpstreamCall",
    "UpstreamConfig",
    "UpstreamEngine",
    "UpstreamTimeoutError",
    "error_from_response",
    "scrub",
]
