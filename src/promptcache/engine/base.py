"""The engine interface: a canonical request in, a stream of events out.

Two shapes exist because compute and I/O differ:

* :class:`SyncEngine` -- CPU-bound engines (the local transformers engine).
  ``generate`` runs on a worker thread and checks ``cancel`` between tokens.
* :class:`Engine` -- what the server and the Python API call. Async, so the
  event loop never blocks on compute. ``engine/threaded.py`` adapts a
  ``SyncEngine`` to it (bounded queue, cancellation on disconnect); the
  upstream engine implements it directly over HTTP.

Both yield zero or more :class:`~promptcache.result.TextDelta` and then
exactly one :class:`~promptcache.result.Result`. Engines know nothing of
HTTP; invalid requests raise :class:`~promptcache.errors.RequestError`.
The value types engines report (:class:`~promptcache.result.ModelInfo`,
:class:`~promptcache.result.PrefixCacheSnapshot`) live with the request types,
so the layers above read them without importing the engine layer.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from promptcache.errors import RequestError
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, PinnedPrefix, PrefixCacheSnapshot, Result, StreamEvent

if TYPE_CHECKING:  # the prefix package needs torch; the engine interface does not
    from promptcache.prefix.named import NamedPrefixes


class SyncEngine(Protocol):
    def models(self) -> list[ModelInfo]: ...

    def generate(
        self, request: ChatRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        """Yield deltas then one Result. Stops early (no Result) once ``cancel`` is set,
        having released every KV reference it held."""
        ...

    def prefix_stats(self) -> PrefixCacheSnapshot | None: ...

    def clear_prefix_cache(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ReplicaSnapshot:
    """One upstream replica's figures (``replica``: its host:port, never a credential)."""

    replica: str
    healthy: bool
    in_flight: int
    requests: int
    errors: int
    ejections: int
    prompt_tokens: int
    cached_tokens: int
    last_error: str | None = None

    @property
    def cached_share(self) -> float:
        """Share of this replica's prompt tokens its prefix cache served."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass(frozen=True, kw_only=True)
class ReplicaFleetSnapshot:
    """An engine over replicas (``engine/upstream/replicas.py``): each one's figures, and
    requests moved off their ring choice by the load bound or by a failure."""

    load_factor: float
    replicas: tuple[ReplicaSnapshot, ...]
    moved_for_load: int = 0
    moved_for_failure: int = 0
    unavailable: int = 0
    """Requests refused because no replica was healthy (503)."""


@runtime_checkable
class PrefixPinningEngine(Protocol):
    """A :class:`SyncEngine` that can pin named prefixes (the local engine, with its
    prefix cache on): ``named_prefixes`` None means it cannot."""

    @property
    def named_prefixes(self) -> NamedPrefixes | None: ...

    def pin_prefix(
        self,
        request: ChatRequest,
        *,
        ttl_seconds: float,
        name: str | None,
        model: str,
        cancel: threading.Event,
    ) -> PinnedPrefix:
        """Prefill ``request``'s prefix (up to the end of its last block) and pin it."""
        ...


def no_named_prefixes(engine: object) -> RequestError:
    """The refusal of an engine that keeps no KV prefix cache to pin into."""
    return RequestError(
        f"Named prefixes need the local engine's KV prefix cache; this server's engine "
        f"({type(engine).__name__}) keeps none (an upstream engine, or the prefix cache is "
        "off). Requests are still answered; only /v1/cache/prefixes is unavailable."
    )


class Engine(ABC):
    @abstractmethod
    def models(self) -> list[ModelInfo]: ...

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Deltas then one Result. Closing the iterator early cancels the generation."""

    async def complete(self, request: ChatRequest) -> Result:
        result: Result | None = None
        async for event in self.stream(request):
            if isinstance(event, Result):
                result = event
        if result is None:
            raise RuntimeError("engine stream ended without a Result")
        return result

    def prefix_stats(self) -> PrefixCacheSnapshot | None:
        return None

    def clear_prefix_cache(self) -> None:
        return None

    @property
    def named_prefixes(self) -> NamedPrefixes | None:
        """The registry of pinned, named prefixes (None: this engine cannot pin any)."""
        return None

    async def pin_prefix(
        self, request: ChatRequest, *, ttl_seconds: float, name: str | None, model: str
    ) -> PinnedPrefix:
        """Prefill and pin the prefix of ``request`` for its tenant, for ``ttl_seconds``;
        ``model`` is the name shown for it. RequestError when this engine cannot."""
        raise no_named_prefixes(self)

    def replica_stats(self) -> ReplicaFleetSnapshot | None:
        """Per-replica figures of an engine that routes over replicas; None otherwise."""
        return None

    async def aclose(self) -> None:
        return None


__all__ = [
    "Engine",
    "ModelInfo",
    "PinnedPrefix",
    "PrefixCacheSnapshot",
    "PrefixPinningEngine",
    "ReplicaFleetSnapshot",
    "ReplicaSnapshot",
    "SyncEngine",
]
