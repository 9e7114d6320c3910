"""Whether each replica may take requests: active probes, passive ejection, backoff.

* **Active checks** (every ``interval`` seconds, each bounded by ``timeout``):
  ``GET /health`` at the replica's root (vLLM, SGLang and llama.cpp answer 200
  when ready, llama.cpp 503 while loading), else promptcache's ``GET /readyz``
  (503 while draining), else ``GET <base_url>/models`` (any OpenAI-compatible
  server; a 401 or 403 still shows it is up). A path that answers 404 or 405 is
  not that server's and the next is tried; the one that answers is remembered.
* **Passive ejection**: a request that cannot connect or gets a 5xx takes the
  replica out at once -- requests need not wait for the next probe to notice.
* **Backoff**: a replica out is tried again (probed, or with probes off, given
  one request) after ``base_backoff * 2**(failures-1)`` seconds, at most
  ``max_backoff``; the first success puts it back.

The probes carry no credentials: health endpoints are open on these servers,
and a 401 from ``/models`` counts as alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

logger = logging.getLogger(__name__)

PROBE_PATHS = ("/health", "/readyz", "models")
"""Tried in order; ``models`` is relative to the base URL (``.../v1/models``), the others
are at the server's root."""
_NOT_THIS_SERVER = (404, 405)


@dataclass(kw_only=True)
class ReplicaHealth:
    """One replica's health, as its requests and probes have found it."""

    healthy: bool = True
    failures: int = 0
    """Consecutive failures (requests and probes); 0 once one succeeds."""
    retry_at: float = 0.0
    """``time.monotonic()`` after which a replica that is out is tried again."""
    ejections: int = 0
    last_error: str | None = None
    probe_path: str | None = None

    def failed(self, why: str, *, now: float, base_backoff: float, max_backoff: float) -> None:
        self.failures += 1
        if self.healthy:
            self.ejections += 1
        self.healthy = False
        self.last_error = why
        self.retry_at = now + min(max_backoff, base_backoff * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.healthy = True
        self.failures = 0
        self.retry_at = 0.0


def root_url(base_url: str) -> str:
    """``scheme://host:port`` of ``base_url``, credentials left out."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "", "", ""))


def probe_urls(base_url: str) -> dict[str, str]:
    """Each of :data:`PROBE_PATHS` as the absolute URL it is fetched at."""
    root = root_url(base_url)
    parts = urlsplit(base_url)
    base = urlunsplit((parts.scheme, urlsplit(root).netloc, parts.path.rstrip("/"), "", ""))
    return {
        path: (root + path if path.startswith("/") else f"{base}/{path}") for path in PROBE_PATHS
    }


async def probe(
    client: httpx.AsyncClient, urls: dict[str, str], known: str | None
) -> tuple[bool, str | None, str | None]:
    """One health check: ``(up, the path that answered, why not up)``.

    ``known`` (the path that answered last time) is tried first. Never raises:
    a transport failure is a replica that is down.
    """
    order = [known] if known else []
    order += [path for path in PROBE_PATHS if path != known]
    for path in order:
        try:
            response = await client.get(urls[path])
        except httpx.HTTPError as error:
            return False, known, f"health check {path}: {type(error).__name__}"
        status = response.status_code
        if status in _NOT_THIS_SERVER and path != "models":
            continue
        # Any answer below 500 from /models is a live OpenAI-compatible server (it may want a key).
        up = status < 500 if path == "models" else status < 300
        return up, path, None if up else f"health check {path} answered {status}"
    return True, known, None  # pragma: no cover - "models" always returns above


class HealthChecker:
    """Probes every replica that is due, in the background, until :meth:`aclose`."""

    def __init__(
        self,
        *,
        urls: list[dict[str, str]],
        states: list[ReplicaHealth],
        interval: float,
        timeout: float,
        base_backoff: float,
        max_backoff: float,
        on_change: Callable[[int, bool], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._urls = urls
        self._states = states
        self.interval = interval
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._on_change = on_change
        self._clock = clock
        self._next = [0.0] * len(states)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), transport=transport, follow_redirects=False
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the probing task on the running loop, unless it runs there already."""
        if self.interval <= 0:
            return
        loop = asyncio.get_running_loop()
        task = self._task
        # Started again when its loop is gone (an engine outliving one event loop).
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._run())

    async def check_all(self) -> None:
        """Probes every replica that is due now (all of them on the first call)."""
        now = self._clock()
        due = [i for i, s in enumerate(self._states) if self._due(i, s, now)]
        await asyncio.gather(*(self._check(i) for i in due))

    def _due(self, index: int, state: ReplicaHealth, now: float) -> bool:
        if state.healthy:
            return now >= self._next[index]
        return now >= state.retry_at

    async def _check(self, index: int) -> None:
        state = self._states[index]
        up, path, why = await probe(self._client, self._urls[index], state.probe_path)
        state.probe_path = path
        now = self._clock()
        self._next[index] = now + self.interval
        was = state.healthy
        if up:
            state.succeeded()
        else:
            state.failed(
                why or "health check failed",
                now=now,
                base_backoff=self._base_backoff,
                max_backoff=self._max_backoff,
            )
        if self._on_change is not None and was != state.healthy:
            self._on_change(index, state.healthy)

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # a bug here must not end the checks (nor reach a request)
                logger.exception("replica health check failed")
            now = self._clock()
            wake = min(
                s.retry_at if not s.healthy else self._next[i] for i, s in enumerate(self._states)
            )
            await asyncio.sleep(min(self.interval, max(0.05, wake - now)))

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            if task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.get_loop().is_closed():  # closed from another loop (shutdown)
                task.get_loop().call_soon_threadsafe(task.cancel)
        with contextlib.suppress(Exception):  # its connections may belong to a closed loop
            await self._client.aclose()


__all__ = ["PROBE_PATHS", "HealthChecker", "ReplicaHealth", "probe", "probe_urls", "root_url"]
