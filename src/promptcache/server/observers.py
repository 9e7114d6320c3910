"""The hook where a finished request's model, tenant, usage and cache outcome are known.

Cost accounting plugs in here (``cost_observer.py``); observers return extra
response headers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from promptcache.response_cache import CacheStatus
from promptcache.result import Result, Usage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CompletedRequest:
    """A chat request that finished successfully, as observers see it."""

    route: str
    """The dialect's name: ``"openai"`` or ``"anthropic"``."""
    model: str
    tenant: str
    namespace: str
    usage: Usage
    """The usage served to the client (on a HIT: the original request's usage)."""
    cache: CacheStatus
    stream: bool
    key: str | None
    result: Result


class RequestObserver(Protocol):
    def on_complete(self, record: CompletedRequest) -> Mapping[str, str]:
        """Called once per successful chat request, on the event loop: keep it cheap.

        Returns extra response headers (e.g. ``x-promptcache-cost``); they are
        sent when the headers have not gone out yet, that is for everything
        but a stream the engine is still generating.
        """
        ...


def notify(observers: Iterable[RequestObserver], record: CompletedRequest) -> dict[str, str]:
    """Every observer told of ``record``; their headers merged. A failing observer is
    logged and skipped: an accounting bug must not fail a served request."""
    headers: dict[str, str] = {}
    for observer in observers:
        try:
            headers.update(observer.on_complete(record))
        except Exception:
            logger.exception("request observer %r failed", observer)
    return headers
