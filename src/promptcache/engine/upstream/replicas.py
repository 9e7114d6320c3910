"""Replicas of one model behind one :class:`Engine`, routed by prefix affinity.

Each request goes to the replica the ring (:mod:`.ring`) gives its affinity
key (:mod:`.affinity`: tools + system + first message, or its
``prompt_cache_key``, under the tenant): requests that share a prefix reach
the replica whose KV cache already holds it, from every gateway alike, and
the load bound spills a hot prefix over to the next replicas of the ring.

A replica that cannot be reached or answers 5xx before the first event of
its answer is taken out (:mod:`.health`) and the request moves to the next
available replica on the ring; a 429/529 moves it on without taking the
replica out. Nothing moves once an event has been passed on -- the client may
have bytes of it. With no replica available the request fails with
:class:`~promptcache.errors.UpstreamUnavailableError` (503) naming the hosts.

Each replica is an ordinary engine (normally an ``UpstreamEngine`` on one
URL, built as a single upstream would be), so provider profiles, retries and
key handling are the same per replica.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence

import httpx

from promptcache.engine.base import Engine, ReplicaFleetSnapshot
from promptcache.engine.upstream.affinity import affinity_key
from promptcache.engine.upstream.attempts import AttemptCounts, attempt_counts
from promptcache.engine.upstream.health import HealthChecker, probe_urls
from promptcache.engine.upstream.replica_state import (
    Replica,
    ReplicaConfig,
    fault,
    labels,
    replica_id,
)
from promptcache.engine.upstream.ring import HashRing
from promptcache.errors import OverloadedError, PromptCacheError, UpstreamUnavailableError
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, Result, StreamEvent


class ReplicaEngine(Engine):
    """Replicas of one model; ``replicas`` are ``(base_url, engine)`` pairs (URLs distinct).

    ``probe_transport`` and ``clock`` are test seams.
    """

    def __init__(
        self,
        replicas: Sequence[tuple[str, Engine]],
        config: ReplicaConfig | None = None,
        *,
        probe_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(replicas) < 1:
            raise ValueError("at least one replica URL is needed")
        self.config = config or ReplicaConfig()
        ids = [replica_id(url) for url, _ in replicas]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"replica URLs given twice: {', '.join(duplicates)}")
        self._ring = HashRing(ids, vnodes=self.config.vnodes)
        self.replicas = [
            Replica(engine=engine, label=label)
            for (_, engine), label in zip(replicas, labels(ids), strict=True)
        ]
        self._clock = clock
        self._moved_for_load = 0
        self._moved_for_failure = 0
        self._unavailable = 0
        self._checker = HealthChecker(
            urls=[probe_urls(url) for url, _ in replicas],
            states=[r.health for r in self.replicas],
            interval=self.config.health_interval,
            timeout=self.config.health_timeout,
            base_backoff=self.config.base_backoff,
            max_backoff=self.config.max_backoff,
            transport=probe_transport,
            clock=clock,
        )

    def models(self) -> list[ModelInfo]:
        seen: dict[str, ModelInfo] = {}
        for replica in self.replicas:
            for info in replica.engine.models():
                seen.setdefault(info.id, info)
        return list(seen.values())

    async def check_health(self) -> None:
        """Probes every replica due for a check now (the background task does this too)."""
        await self._checker.check_all()

    def _available(self, replica: Replica, now: float) -> bool:
        health = replica.health
        if health.healthy:
            return True
        # With probes off, a replica out gets one request again once its backoff ran out.
        return self.config.health_interval == 0 and now >= health.retry_at

    def _point(self, request: ChatRequest) -> int:
        key = affinity_key(
            request,
            blocks=self.config.affinity_blocks,
            block_bytes=self.config.affinity_block_bytes,
        )
        return int.from_bytes(key[:8], "big")

    def _choose(self, point: int) -> list[int]:
        now = self._clock()
        return self._ring.choose(
            point,
            loads=[r.in_flight for r in self.replicas],
            available=[self._available(r, now) for r in self.replicas],
            load_factor=self.config.load_factor,
            min_load=self.config.min_load,
        )

    def route(self, request: ChatRequest) -> list[str]:
        """The replicas (labels) ``request`` would try now, in order; the first is its choice."""
        return [self.replicas[i].label for i in self._choose(self._point(request))]

    def _order(self, request: ChatRequest) -> list[Replica]:
        self._checker.start()
        point = self._point(request)
        order = self._choose(point)
        if not order:
            self._unavailable += 1
            raise UpstreamUnavailableError(self._none_available())
        ring_first = next(self._ring.walk(point))
        if order[0] != ring_first and self.replicas[ring_first].health.healthy:
            self._moved_for_load += 1
        return [self.replicas[i] for i in order]

    def _none_available(self) -> str:
        now = self._clock()
        out = [
            f"{r.label} ({r.health.last_error or 'out'}; retried in "
            f"{max(0.0, r.health.retry_at - now):.0f} s)"
            for r in self.replicas
        ]
        return f"No upstream replica is healthy: {', '.join(out)}."

    def _failed(self, replica: Replica, error: PromptCacheError) -> bool:
        """Records a failed attempt; True when the request may move to the next replica."""
        why = fault(error)
        if why is None and not isinstance(error, OverloadedError):
            return False  # the caller's error (a 4xx): the replica did its job
        replica.errors += 1
        if why is not None:
            replica.health.failed(
                f"{type(error).__name__}: {why}",
                now=self._clock(),
                base_backoff=self.config.base_backoff,
                max_backoff=self.config.max_backoff,
            )
        return True

    def _succeeded(self, replica: Replica, result: Result) -> None:
        replica.prompt_tokens += result.usage.prompt_tokens
        replica.cached_tokens += result.usage.cache_read_input_tokens
        if self.config.health_interval == 0:
            replica.health.succeeded()  # with probes on, only a probe puts a replica back

    async def complete(self, request: ChatRequest) -> Result:
        return await self._complete(request, None)

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._stream(request, None)

    def bind(self, call: object) -> Engine:
        """These replicas for one request: each replica engine bound to ``call`` (the
        caller's key and deadline, ``engine/upstream/credentials.py``), state shared."""
        return _BoundReplicas(self, call)

    @property
    def accepts_any_model(self) -> bool:
        return all(getattr(r.engine, "accepts_any_model", False) for r in self.replicas)

    async def discover_models(self, call: object | None = None) -> list[ModelInfo]:
        """The model list of the first available replica (in the order given) that
        reports one; the replicas serve one model, so any of them answers for all."""
        last: PromptCacheError | None = None
        now = self._clock()
        for replica in self.replicas:
            discover = getattr(_bound(replica.engine, call), "discover_models", None)
            if discover is None or not self._available(replica, now):
                continue
            try:
                models: list[ModelInfo] = await discover()
            except PromptCacheError as error:
                if not self._failed(replica, error):
                    raise
                last = error
                continue
            return models
        if last is not None:
            raise self._exhausted(last)
        return self.models()

    def _attempts(self, request: ChatRequest) -> Iterator[Replica]:
        """The replicas to try in turn, each counted in flight (the caller takes it off)."""
        for position, replica in enumerate(self._order(request)):
            if position and not self._available(replica, self._clock()):
                continue  # taken out by another request meanwhile
            replica.requests += 1
            replica.in_flight += 1
            yield replica

    def _move_on(self, replica: Replica, error: PromptCacheError) -> PromptCacheError:
        """``error`` when the request may move to the next replica; else it is raised."""
        if not self._failed(replica, error):
            raise error
        self._moved_for_failure += 1
        return error

    async def _complete(self, request: ChatRequest, call: object | None) -> Result:
        last: PromptCacheError | None = None
        for replica in self._attempts(request):
            try:
                result = await _bound(replica.engine, call).complete(request)
            except PromptCacheError as error:
                last = self._move_on(replica, error)
                continue
            finally:
                replica.in_flight -= 1
            self._succeeded(replica, result)
            return result
        raise self._exhausted(last)

    async def _stream(
        self, request: ChatRequest, call: object | None
    ) -> AsyncIterator[StreamEvent]:
        last: PromptCacheError | None = None
        for replica in self._attempts(request):
            events = _bound(replica.engine, call).stream(request)
            try:
                try:
                    first = await anext(events)
                except StopAsyncIteration:
                    return
                except PromptCacheError as error:
                    last = self._move_on(replica, error)
                    continue
                async with contextlib.aclosing(self._relay(replica, first, events)) as relay:
                    async for event in relay:
                        yield event
                return
            finally:
                replica.in_flight -= 1
                if isinstance(events, AsyncGenerator):
                    await events.aclose()  # closes the replica's response
        raise self._exhausted(last)

    async def _relay(
        self, replica: Replica, first: StreamEvent, events: AsyncIterator[StreamEvent]
    ) -> AsyncGenerator[StreamEvent]:
        """``first`` and the rest of a replica's answer. The client may have bytes of it
        from here on, so an error goes to the client, never to another replica."""
        try:
            event = first
            while True:
                if isinstance(event, Result):
                    self._succeeded(replica, event)
                yield event
                event = await anext(events)
        except StopAsyncIteration:
            return
        except PromptCacheError as error:
            self._failed(replica, error)
            raise

    def _exhausted(self, last: PromptCacheError | None) -> PromptCacheError:
        if isinstance(last, OverloadedError) and any(r.health.healthy for r in self.replicas):
            return last  # every replica busy, none broken: the caller should back off (429)
        self._unavailable += 1
        unavailable = UpstreamUnavailableError(self._none_available())
        # The last replica's Retry-After, if it gave one, is the client's best wait.
        unavailable.retry_after = last.retry_after if last is not None else None
        return unavailable

    def upstream_attempts(self) -> AttemptCounts:
        """Attempts and retries summed over the replicas' engines (per replica, the
        ``promptcache_replica_*`` figures tell them apart)."""
        total = AttemptCounts()
        for replica in self.replicas:
            read = attempt_counts(replica.engine)
            if read is not None:
                total += read()
        return total

    def replica_stats(self) -> ReplicaFleetSnapshot:
        return ReplicaFleetSnapshot(
            load_factor=self.config.load_factor,
            replicas=tuple(r.snapshot() for r in self.replicas),
            moved_for_load=self._moved_for_load,
            moved_for_failure=self._moved_for_failure,
            unavailable=self._unavailable,
        )

    async def aclose(self) -> None:
        await self._checker.aclose()
        for replica in self.replicas:
            await replica.engine.aclose()


def _bound(engine: Engine, call: object | None) -> Engine:
    """``engine`` for one request with ``call`` (see :meth:`ReplicaEngine.bind`)."""
    bind = getattr(engine, "bind", None) if call is not None else None
    if bind is None:
        return engine
    bound: Engine = bind(call)
    return bound


class _BoundReplicas(Engine):
    """A :class:`ReplicaEngine` for one request's :class:`UpstreamCall`."""

    def __init__(self, fleet: ReplicaEngine, call: object) -> None:
        self._fleet = fleet
        self._call = call

    def models(self) -> list[ModelInfo]:
        return self._fleet.models()

    @property
    def accepts_any_model(self) -> bool:
        return self._fleet.accepts_any_model

    async def discover_models(self) -> list[ModelInfo]:
        return await self._fleet.discover_models(self._call)

    async def complete(self, request: ChatRequest) -> Result:
        return await self._fleet._complete(request, self._call)

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        return self._fleet._stream(request, self._call)

    def replica_stats(self) -> ReplicaFleetSnapshot:
        return self._fleet.replica_stats()


__all__ = ["Replica", "ReplicaConfig", "ReplicaEngine", "replica_id"]
