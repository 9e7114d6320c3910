"""Sending to the upstream: timeouts, retries with backoff, and errors that say what failed.

:class:`UpstreamSender` wraps the engine's ``httpx.AsyncClient``. A request is
retried on a connection failure or timeout and on the statuses providers use
for "try again" (429, 500, 502, 503, 504 and Anthropic's 529), as the OpenAI
and Anthropic SDKs do, and bounded the same way: ``max_retries`` (default 2,
their default) and the request's own deadline (``promptcache serve
--request-timeout``). The wait is the provider's own when it gives one
(``retry-after-ms``, then ``Retry-After`` in seconds or as an HTTP date), else
exponential backoff with full jitter (a uniform draw in ``[0, min(0.5 * 2^n,
8)]`` s), so a fleet of gateways that failed together does not retry together.
A wait that would run past the deadline, or a ``Retry-After`` over a minute
(a quota, not a blip), is not waited for: the caller gets the upstream's
answer at once, rather than a 504 later. The provider's ``x-should-retry``
header, which both SDKs obey, overrides the status either way.

Streams are retried while no event has been read (:meth:`UpstreamSender.open`):
a connection that fails opening, or one that dies after the 2xx headers but
before the first event, is tried again. The server sends its client nothing --
not even the status line -- before the engine's first event (``server/flow.py``
awaits it before answering), so the client has seen nothing; after the first
event a failure is the stream's in-band error, never a second attempt.

A refusal the provider gave a ``Retry-After`` (one not waited for) carries it
as the error's ``retry_after``, which the server passes on to its own client.
Every attempt and retry is counted (:class:`AttemptTally`, read as
:class:`AttemptCounts` by ``/metrics`` and ``/v1/cache/stats``): attempts by
outcome (``ok``, ``retried``, ``failed``), retries by reason (the status, or
``connect``, ``timeout``, ``dropped``).

Every failure names the upstream by host (never its key or URL credentials) and
what went wrong: ``connection refused``, ``timed out reading the response``,
``answered 503``. Timeouts are :class:`UpstreamTimeoutError` (a 504); the rest
of the transport failures are :class:`~promptcache.errors.UpstreamError` (a 502).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import math
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx

from promptcache.engine.upstream.attempts import AttemptTally, transport_reason
from promptcache.engine.upstream.credentials import scrub
from promptcache.errors import PromptCacheError, RequestTimeoutError, UpstreamError

logger = logging.getLogger(__name__)

Primed = TypeVar("Primed")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
"""Statuses that mean "try again": rate limited, a server fault, overloaded (529)."""
DEFAULT_MAX_RETRIES = 2
"""The OpenAI and Anthropic SDKs' default: three attempts in all."""


class NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing: one client serves every caller (every tenant, with
    forwarded keys), so a cookie one provider answer sets must not ride along on the
    next caller's request. (Also spares httpx's cookie bookkeeping on every response.)"""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


class UpstreamTimeoutError(RequestTimeoutError, UpstreamError):
    """The upstream did not connect or answer in time: a 504 (RequestTimeoutError comes
    first in the MRO, so the status table finds 504 before UpstreamError's 502)."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to wait before trying the upstream again."""

    max_retries: int = DEFAULT_MAX_RETRIES
    """Retries after the first attempt (0: one attempt only)."""
    initial_delay: float = 0.5
    max_delay: float = 8.0
    """The backoff's cap, in seconds (the SDKs' 0.5 s doubling up to 8 s)."""
    max_retry_after: float = 60.0
    """The longest ``Retry-After`` waited for; a longer one is answered at once."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("initial_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")

    def backoff(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry`` (0-based): full jitter under the cap."""
        cap = min(self.initial_delay * 2.0 ** min(retry, 60), self.max_delay)
        return cap * draw()


def retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """The wait the upstream asks for, in seconds, or None: ``retry-after-ms`` (OpenAI's),
    else ``Retry-After`` as seconds or an HTTP date. A date in the past is 0; a value
    that is negative, not a number or not finite is ignored."""
    milliseconds = _number(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now())


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value >= 0 and math.isfinite(value) else None


def _should_retry(response: httpx.Response) -> bool:
    # The provider's explicit word wins over the status, as in both SDKs.
    explicit = str(response.headers.get("x-should-retry", "")).strip().lower()
    if explicit in ("true", "false"):
        return explicit == "true"
    return response.status_code in RETRY_STATUSES


_RETRYABLE_TRANSPORT = (
    httpx.TimeoutException,
    httpx.NetworkError,  # connect, read, write and close errors
    httpx.RemoteProtocolError,  # the upstream hung up before answering
)


async def drain(lines: AsyncIterator[str], limit: int = 64) -> None:
    """Read what is left of a stream after its end marker (a blank line, a comment),
    so httpx can put the connection back in its pool; a stream with more than
    ``limit`` lines left is abandoned (its connection closed) instead."""
    for _ in range(limit):
        try:
            await anext(lines)
        except StopAsyncIteration:
            return


def _cause_chain(error: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connect_failure(error: httpx.ConnectError) -> str:
    for cause in _cause_chain(error):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not resolved"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
    return f"connect failed ({error})" if str(error) else "connect failed"


def _upstream_name(url: httpx.URL) -> str:
    """``host`` or ``host:port``: never the user info a URL may carry."""
    return f"{url.host}:{url.port}" if url.port is not None else url.host


async def _unprimed(response: httpx.Response) -> None:
    return None


def attempts_text(count: int) -> str:
    """`` (3 attempts)`` after a message when it took more than one."""
    return f" ({count} attempts)" if count > 1 else ""


def _with_retry_after(error: Exception, asked: float | None) -> Exception:
    """``error`` carrying the provider's ``Retry-After`` (seconds), for the server's answer."""
    if asked is not None and isinstance(error, PromptCacheError):
        error.retry_after = asked
    return error


class UpstreamSender:
    """Sends the engine's requests with its retry policy; one per engine, shared by its
    bound per-request copies (it holds no per-request state)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self.policy = policy
        self.upstream = _upstream_name(client.base_url)
        self.sleep = sleep
        """Waits between attempts (a test replaces it to record the waits)."""
        self._draw = draw
        self.tally = AttemptTally()

    async def send(
        self,
        request: httpx.Request,
        *,
        deadline: float | None,
        secrets: Iterable[str],
        refuse: Callable[[httpx.Response, int], Exception],
        stream: bool = False,
    ) -> httpx.Response:
        """The upstream's 2xx response to ``request`` (its body unread when ``stream``).

        ``refuse`` turns a final error response (already read) and the number of
        attempts made into the exception to raise; ``deadline`` is the event loop's
        time by which the whole request must be answered (None: only ``max_retries``
        bounds the retries).
        """
        response, _ = await self.open(
            request,
            deadline=deadline,
            secrets=secrets,
            refuse=refuse,
            stream=stream,
            prime=_unprimed,
        )
        return response

    async def open(
        self,
        request: httpx.Request,
        *,
        deadline: float | None,
        secrets: Iterable[str],
        refuse: Callable[[httpx.Response, int], Exception],
        stream: bool = True,
        prime: Callable[[httpx.Response], Awaitable[Primed]],
    ) -> tuple[httpx.Response, Primed]:
        """:meth:`send`, and ``prime`` run on the 2xx response (a stream's first event
        read) as part of the attempt: a transport failure inside ``prime`` -- the
        connection dying before the first event -- is retried like one before the
        headers. Any other exception from ``prime`` closes the response and is raised."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._client.send(request, stream=stream)
                if response.is_error:
                    await response.aread()  # the message, and the connection back to the pool
                    await response.aclose()
                else:
                    primed = await self._primed(response, prime)
            except httpx.HTTPError as error:
                failure = self.transport_error(error, secrets=secrets, attempts=attempt)
                retryable = isinstance(error, _RETRYABLE_TRANSPORT)
                wait = self._wait(attempt, None, deadline) if retryable else None
                if wait is None:
                    self.tally.attempts["failed"] += 1
                    raise failure from error
                reason, why = failure.message, transport_reason(error)
            except Exception:  # (a cancelled attempt -- the client left -- is no outcome)
                self.tally.attempts["failed"] += 1
                raise
            else:
                if not response.is_error:
                    self.tally.attempts["ok"] += 1
                    return response, primed
                asked = retry_after(response.headers)
                wait = self._wait(attempt, asked, deadline)
                if wait is None or not _should_retry(response):
                    self.tally.attempts["failed"] += 1
                    raise _with_retry_after(refuse(response, attempt), asked)
                why = str(response.status_code)
                reason = f"the upstream {self.upstream} answered {why}"
            self.tally.attempts["retried"] += 1
            self.tally.retries[why] += 1
            logger.warning(
                "%s; retrying in %.2f s (retry %d of %d)",
                reason,
                wait,
                attempt,
                self.policy.max_retries,
            )
            await self.sleep(wait)

    @staticmethod
    async def _primed(
        response: httpx.Response, prime: Callable[[httpx.Response], Awaitable[Primed]]
    ) -> Primed:
        try:
            return await prime(response)
        except BaseException:
            await response.aclose()
            raise

    def _wait(self, attempt: int, asked: float | None, deadline: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none to make."""
        if attempt > self.policy.max_retries:
            return None
        if asked is not None and asked > self.policy.max_retry_after:
            return None
        wait = asked if asked is not None else self.policy.backoff(attempt - 1, self._draw)
        if deadline is not None and asyncio.get_running_loop().time() + wait >= deadline:
            return None  # the wait would end past the deadline: answer now, not with a 504 later
        return wait

    def transport_error(
        self, error: Exception, *, secrets: Iterable[str], attempts: int = 1
    ) -> UpstreamError:
        """The promptcache error for a failure to talk to the upstream, naming the upstream
        and what failed, with ``secrets`` scrubbed from the transport's own words."""
        timeouts = self._client.timeout
        where = f"The upstream {self.upstream}"
        if isinstance(error, httpx.ConnectTimeout):
            text = f"{where} timed out connecting (connect timeout {timeouts.connect:g} s)"
        elif isinstance(error, httpx.ReadTimeout):
            text = f"{where} timed out reading the response (read timeout {timeouts.read:g} s)"
        elif isinstance(error, httpx.WriteTimeout):
            text = f"{where} timed out receiving the request (write timeout {timeouts.write:g} s)"
        elif isinstance(error, httpx.PoolTimeout):
            text = f"{where} timed out: no free connection (pool timeout {timeouts.pool:g} s)"
        elif isinstance(error, httpx.ConnectError):
            text = f"{where} could not be reached: {_connect_failure(error)}"
        elif isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
            text = f"{where} closed the connection: {error}"
        else:
            text = f"{where} could not be reached: {type(error).__name__}: {error}"
        text = scrub(text + attempts_text(attempts), secrets)
        if isinstance(error, httpx.TimeoutException):
            return UpstreamTimeoutError(text)
        return UpstreamError(text)
