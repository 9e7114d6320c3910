"""The upstream's model list, discovered (``GET /models``), kept and refreshed.

:func:`fetch_models` reads one list (Anthropic's pages followed);
:class:`ModelDirectory` keeps them.

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
from datetime import datetime
from typing import Any

import httpx

from promptcache.errors import (
    AuthenticationError,
    PermissionDeniedError,
    PromptCacheError,
    UpstreamError,
)
from promptcache.result import ModelInfo

logger = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[list[ModelInfo]]]
GetPage = Callable[[dict[str, str] | None], Awaitable[httpx.Response]]
MAX_PAGES = 20


async def fetch_models(get_page: GetPage, *, paged: bool, owner: str) -> list[ModelInfo]:
    """Every model of a ``GET /models`` list: one OpenAI-style page, or Anthropic's pages
    (``limit=1000``, then ``after_id=<last_id>`` while ``has_more``; at most 20)."""
    params = {"limit": "1000"} if paged else None
    found: list[ModelInfo] = []
    for _ in range(MAX_PAGES):
        response = await get_page(params)
        try:
            body = response.json()
        except ValueError as error:
            raise UpstreamError("The upstream's model list is not JSON.") from error
        page = body.get("data") if isinstance(body, dict) else None
        found += [model_info(m, owner) for m in page or () if _model_entry(m)]
        if not (paged and isinstance(body, dict) and body.get("has_more") and body.get("last_id")):
            break
        params = {"limit": "1000", "after_id": str(body["last_id"])}
    return found


def _model_entry(entry: object) -> bool:
    return isinstance(entry, dict) and bool(entry.get("id"))


def model_info(entry: dict[str, Any], owner: str) -> ModelInfo:
    """One ``GET /models`` entry: OpenAI's ``created`` (epoch seconds) or Anthropic's
    ``created_at`` (an ISO date); ``owned_by`` when the provider names one."""
    created = entry.get("created")
    if not isinstance(created, int) and isinstance(entry.get("created_at"), str):
        try:
            stamp = datetime.fromisoformat(entry["created_at"].replace("Z", "+00:00"))
            created = int(stamp.timestamp())
        except ValueError:
            created = 0
    return ModelInfo(
        id=str(entry["id"]),
        owned_by=str(entry.get("owned_by") or owner),
        created=created if isinstance(created, int) else 0,
    )


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
