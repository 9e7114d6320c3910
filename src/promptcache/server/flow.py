"""One chat request through the server, start to finish, in one place.

    HTTP body -> key check (401) -> size check (413) -> content type (415)
      -> JSON checks (400: syntax, depth, lone surrogates) -> dialect.parse_request (400)
      -> model resolution (404)
      -> response cache (lookup_or_lead): HIT (render / replay as SSE) | lead | BYPASS
      -> checkpoint planner (--auto-cache)
      -> engine (queue, 429) -> Result -> store -> observers -> render

Every dialect shares this flow; the routes (``routes.py``) only choose the
:class:`~promptcache.dialects.base.Dialect`, whose ``name`` is the route label. The
response-cache rules (SPEC §3):

* Only deterministic requests are cached: greedy (temperature 0 or unset) or
  seeded. A sampled request without a seed is meant to vary, so it is a
  ``BYPASS`` unless the server runs with ``cache_sampled``.
* ``Cache-Control: no-cache`` skips the lookup and coalescing (``BYPASS``, as
  the library's ``get_or_compute``) but stores the fresh result; ``no-store``
  serves hits but stores nothing; ``max-age=N`` treats older entries as misses.
* Only complete, successful results are stored: the store is written when the
  engine's final ``Result`` arrives, never for an error or a stream the client
  abandoned.
* A request that joined another identical request's flight is answered from
  its result and reported as a ``HIT`` (it cost no model work).

Every request runs under one boundary (:meth:`ChatFlow.handle`): a deadline
(``ServerConfig.request_timeout``; past it the client gets a 504, in-band once
a stream has started, and the engine stops the generation), and any failure
that is not a :class:`~promptcache.errors.PromptCacheError` is logged with a
request id and answered as a 500 carrying that id -- never passed up to
Starlette, whose error middleware would close the keep-alive connection.

:class:`RequestObserver` is the single hook where a finished request's model,
tenant, usage and cache outcome are known (cost accounting plugs in there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack

from starlette.requests import Request
from starlette.responses import Response

from promptcache.checkpoints import plan_checkpoints
from promptcache.dialects.base import Dialect
from promptcache.dialects.replay import replay_events
from promptcache.engine.base import Engine
from promptcache.engine.upstream.credentials import (
    UpstreamCall,
    beta_scoped_key,
    bind_call,
    call_from_headers,
)
from promptcache.errors import (
    PromptCacheError,
    RequestError,
    RequestTimeoutError,
)
from promptcache.keys import response_key
from promptcache.request import ChatRequest
from promptcache.response_cache import CacheHit, CacheStatus, ResponseCache
from promptcache.result import PromptUsage, Result, StreamEvent, TextDelta
from promptcache.server.auth import KeyRing
from promptcache.server.cache_policy import (
    CacheDirectives,
    parse_cache_control,
)
from promptcache.server.config import ServerConfig
from promptcache.server.diagnostics import CacheDiagnostics
from promptcache.server.metrics import ServerMetrics
from promptcache.server.models import AsAsked, ModelCatalog
from promptcache.server.observers import CompletedRequest, RequestObserver, notify
from promptcache.server.parse_memo import LRU, ParsedRequest
from promptcache.server.request_reader import RequestReader
from promptcache.server.responses import (
    ClosingStreamingResponse,
    error_response,
    json_bytes,
    json_response,
)
from promptcache.server.streaming import (
    Publish,
    Tap,
    aclose_quietly,
    logged_internal_error,
    stream_frames,
)

logger = logging.getLogger(__name__)

PREFIX_MISS_HEADER = "x-promptcache-prefix-miss"
"""Why a generated prompt's full blocks were not all read from the prefix cache, and where
it diverged (set by the local engine; never on a response-cache HIT)."""


class ChatFlow:
    """Serves every dialect's chat route: ``POST /v1/chat/completions``, ``/v1/messages``."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        engine: Engine,
        cache: ResponseCache | None,
        keyring: KeyRing,
        catalog: ModelCatalog,
        metrics: ServerMetrics,
        observers: Sequence[RequestObserver] = (),
    ) -> None:
        self.config = config
        self.engine = engine
        self.cache = cache
        self.keyring = keyring
        self.catalog = catalog
        self.metrics = metrics
        self.observers = list(observers)
        self._reader = RequestReader(
            max_body_bytes=config.max_body_bytes, keyring=keyring, catalog=catalog
        )
        self._rendered: LRU[tuple[str, str, str, int, str], bytes] = LRU()
        self.diagnostics = CacheDiagnostics()

    async def handle(self, http: Request, dialect: Dialect) -> Response:
        route = dialect.name
        started = time.perf_counter()
        deadline = self._deadline()
        try:
            async with asyncio.timeout_at(deadline):
                parsed = await self._reader.read(http, dialect)
                directives = parse_cache_control(http.headers.get("cache-control"))
                # The caller's provider key (forward mode) travels beside the request,
                # never in it: ChatRequest feeds cache keys, memos and logs.
                call = call_from_headers(
                    http.headers,
                    api_key=self.keyring.forwarded_key(http.headers),
                    deadline=deadline,
                    whole=not parsed.request.transport.stream,
                )
                response = await self._serve(parsed, directives, dialect, started, call)
        except PromptCacheError as error:
            response = error_response(dialect, error)
        except TimeoutError:
            response = error_response(dialect, self._timed_out())
        except Exception:
            response = error_response(dialect, logged_internal_error(route))
        finish = getattr(dialect, "finish_response", None)
        if finish is not None:  # Bedrock: its stream's media type, InvokeModel's token headers
            finish(response)
        self.metrics.count_request(route, response.status_code)
        return response

    def _deadline(self) -> float | None:
        timeout = self.config.request_timeout
        return None if timeout is None else asyncio.get_running_loop().time() + timeout

    def _timed_out(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"The request did not finish within the server's {self.config.request_timeout:g} s "
            "deadline (promptcache serve --request-timeout)."
        )

    # -- request --------------------------------------------------------------

    def _cache_key(self, parsed: ParsedRequest, directives: CacheDirectives) -> str | None:
        if self.cache is None or not (directives.read or directives.write):
            return None
        sampling = parsed.request.sampling
        if not (sampling.greedy or sampling.seed is not None or self.config.cache_sampled):
            return None
        if parsed.cache_key is None:
            try:
                parsed.cache_key = response_key(parsed.request)
            except (TypeError, ValueError) as exc:  # e.g. 1e400 read as infinity
                raise RequestError(f"The request cannot be cached as given: {exc}") from None
        return parsed.cache_key

    # -- response cache ------------------------------------------------------

    async def _serve(
        self,
        parsed: ParsedRequest,
        directives: CacheDirectives,
        dialect: Dialect,
        started: float,
        call: UpstreamCall,
    ) -> Response:
        request = parsed.request
        if parsed.asked_model is not None:
            dialect = AsAsked(dialect, parsed.asked_model)
        key = self._cache_key(parsed, directives)
        if key is not None and call.anthropic_beta:
            key = beta_scoped_key(key, call.anthropic_beta)  # betas may change the answer
        cache = self.cache
        if key is None or cache is None:
            self.metrics.count_cache(CacheStatus.BYPASS)
            return await self._generate(
                request, dialect, started, call, key=None, status=CacheStatus.BYPASS
            )
        if not directives.read:
            # no-cache: not looked up (BYPASS), but the fresh result is stored.
            self.metrics.count_cache(CacheStatus.BYPASS)

            async def store(result: Result) -> None:
                await cache.aput(key, result)

            return await self._generate(
                request,
                dialect,
                started,
                call,
                key=key,
                status=CacheStatus.BYPASS,
                publish=store,
            )
        outcome = await cache.lookup_or_lead(
            key, max_age=directives.max_age, write=directives.write
        )
        if isinstance(outcome, CacheHit):
            self.metrics.count_cache(CacheStatus.HIT)
            return self._replay(request, outcome.result, outcome.age, dialect, key)
        self.metrics.count_cache(CacheStatus.MISS)
        lead = outcome
        stack = AsyncExitStack()
        stack.push_async_callback(lead.finish)  # stored (if published) and released

        async def publish(result: Result) -> None:
            lead.publish(result)  # stored when the lead finishes, waiters served now

        return await self._generate(
            request,
            dialect,
            started,
            call,
            key=key,
            status=CacheStatus.MISS,
            publish=publish,
            stack=stack,
        )

    def _replay(
        self,
        request: ChatRequest,
        result: Result,
        age: float,
        dialect: Dialect,
        key: str,
    ) -> Response:
        route = dialect.name
        headers: dict[str, str] = {
            "x-promptcache": CacheStatus.HIT,
            "x-promptcache-key": key,
            "age": str(int(age)),
        }
        headers.update(self._observe(request, result, route, CacheStatus.HIT, key))
        if request.transport.stream:
            frames = dialect.render_stream(replay_events(result), request)
            return ClosingStreamingResponse(frames, headers=headers)
        memo_key = (route, key, result.id, result.created, _shown_model(dialect, request))
        content = self._rendered.get(memo_key)
        if content is None:
            content = json_bytes(dialect.render_response(result, request))
            self._rendered.put(memo_key, content)
        if request.transport.diagnostics:  # opted in: compared and recorded
            content = self.diagnostics.annotate_rendered(request, content)
        return Response(content, headers=headers, media_type="application/json")

    # -- engine ----------------------------------------------------------------

    async def _generate(
        self,
        request: ChatRequest,
        dialect: Dialect,
        started: float,
        call: UpstreamCall,
        *,
        key: str | None,
        status: CacheStatus,
        publish: Publish | None = None,
        stack: AsyncExitStack | None = None,
    ) -> Response:
        route = dialect.name
        stack = stack or AsyncExitStack()
        headers: dict[str, str] = {"x-promptcache": status}
        if key is not None:
            headers["x-promptcache-key"] = key
        try:
            planned = self._plan(request)
            events = bind_call(self.engine, call).stream(planned)
            if not request.transport.stream:
                result = await self._collect(events, route, started)
                if publish is not None:
                    await publish(result)
                headers.update(self._observe(request, result, route, status, key))
                if result.prefix_miss is not None:
                    headers[PREFIX_MISS_HEADER] = result.prefix_miss
                body = dialect.render_response(result, request)
                if request.transport.diagnostics:
                    body = self.diagnostics.annotate(request, body)
            else:
                # The first event is awaited here so that a full queue (429) or an
                # engine-side validation error still gets its own HTTP status. Nothing
                # reaches the client before it (not even the status line): an upstream
                # engine retries a stream that dies before its first event.
                first = await anext(events)
                if isinstance(first, PromptUsage) and first.prefix_miss is not None:
                    headers[PREFIX_MISS_HEADER] = first.prefix_miss
        except BaseException as exc:
            await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if not request.transport.stream:
            await stack.aclose()
            return json_response(body, headers=headers)
        observed = Tap(
            first=first,
            events=events,
            deadline=call.deadline,
            timed_out=self._timed_out,
            on_first_token=lambda: self.metrics.observe_ttft(route, time.perf_counter() - started),
            on_result=lambda result: self._observe(request, result, route, status, key),
            publish=publish,
        )
        frames = stream_frames(observed, request, dialect, stack)
        return ClosingStreamingResponse(frames, headers=headers)

    def _plan(self, request: ChatRequest) -> ChatRequest:
        if self.config.auto_cache is None:
            return request
        return plan_checkpoints(
            request,
            self.config.auto_cache,
            model_supports_caching=self.config.model_supports_caching,
        )

    async def _collect(
        self, events: AsyncIterator[StreamEvent], route: str, started: float
    ) -> Result:
        first_token = True
        try:
            async for event in events:
                if first_token and isinstance(event, TextDelta | Result):
                    first_token = False
                    self.metrics.observe_ttft(route, time.perf_counter() - started)
                if isinstance(event, Result):
                    return event
        finally:
            await aclose_quietly(events)
        raise PromptCacheError("The engine ended without a result.")

    def _observe(
        self,
        request: ChatRequest,
        result: Result,
        route: str,
        status: CacheStatus,
        key: str | None,
    ) -> dict[str, str]:
        if not self.observers:
            return {}
        record = CompletedRequest(
            route=route,
            model=request.model,
            tenant=request.tenant,
            namespace=request.namespace,
            usage=result.usage,
            cache=status,
            stream=request.transport.stream,
            key=key,
            result=result,
        )
        return notify(self.observers, record)


def _shown_model(dialect: Dialect, request: ChatRequest) -> str:
    """The model name a rendered body shows: the alias asked for, else the served one."""
    return dialect.asked if isinstance(dialect, AsAsked) else request.model
