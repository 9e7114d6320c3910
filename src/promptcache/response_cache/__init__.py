"""The exact response cache: results by key over any store, with coalescing.

``cache.py`` owns reads, writes and the lookup-or-lead entry; ``flight.py``
the one coalescing core both the asyncio and the thread paths share.
"""

from __future__ import annotations

from promptcache.response_cache.cache import AsyncFlight, CacheHit, CacheStatus, ResponseCache
from promptcache.response_cache.flight import Lead

__all__ = ["AsyncFlight", "CacheHit", "CacheStatus", "Lead", "ResponseCache"]
