"""The upstream's model list, discovered (``GET /models``), kept and refreshed.

One list per provider key, since with ``--upstream-key-mode forward`` two
callers' keys may see different models (organisations, projects). A list is
served for ``refresh`` seconds, then asked for again; when that fails for a
reason of the upstream's (unreachable, 5xx, 429) the last good list is served
and the upstream asked again after ``retry_failed`` seconds, so a provider's
outage neither empties ``/v1/models`` nor is hammered by it. A refusal of the
key (401, 403) is the caller's answer and forgets the list. Concurrent askers
for one key share one fetch. Keys are held only as their SHA-256 digest, in a
bounded LRU.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from promptcache.errors import AuthenticationError, PermissionDeniedError, PromptCacheError
from promptcache.result import ModelInfo

logger = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[list[ModelInfo]]]


@dataclass
class _Entry:
    models: list[ModelInfo] | None = None
    fresh_until: float = 0.0
    fetching: asyncio.Future[list[ModelInfo]] | None = None


class ModelDirectory:
    def __init__(
        self,
        *,
        refresh: float = 300.0,
        retry_failed: float = 30.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh = refresh
        self.retry_failed = min(retry_failed, refresh)
        self._max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    async def get(self, key: str | None, fetch: Fetch) -> list[ModelInfo]:
        """The models for provider ``key`` (None: the server's own), fetched with
        ``fetch`` when there is no fresh list."""
        slot = hashlib.sha256((key or "").encode()).digest()
        entry = self._entries.get(slot)
        if entry is None:
            entry = self._entries[slot] = _Entry()
            while len(self._entries) > self._max_keys:
                self._entries.popitem(last=False)
        self._entries.move_to_end(slot)
        if entry.models is not None and self._clock() < entry.fresh_until:
            return entry.models
        if entry.fetching is None:
            entry.fetching = asyncio.ensure_future(self._refresh(slot, entry, fetch))
        # Shielded: one caller going away does not cancel the fetch the others wait on.
        return await asyncio.shield(entry.fetching)

    async def _refresh(self, slot: bytes, entry: _Entry, fetch: Fetch) -> list[ModelInfo]:
        try:
            models = await fetch()
        except (AuthenticationError, PermissionDeniedError):
            self._entries.pop(slot, None)
            raise
        except PromptCacheError as error:
            if entry.models is None:
                raise
            entry.fresh_until = self._clock() + self.retry_failed
            logger.warning(
                "model list refresh failed, serving the last good list: %s", error.message
            )
            return entry.models
        finally:
            entry.fetching = None
        entry.models = models
        entry.fresh_until = self._clock() + self.refresh
        return models
