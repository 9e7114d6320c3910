"""The parts of a replica fleet: its options, one replica's record, and failures.

:class:`ReplicaConfig` holds the options (validated: they come from users);
:class:`Replica` one replica's engine, label (``host:port``), health and
running counts; :func:`replica_id` the ring identity of a replica URL; and
:func:`fault` decides which errors show a replica failing (it is taken out
and the request moves on) rather than the caller's request being wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from promptcache.engine.base import Engine, ReplicaSnapshot
from promptcache.engine.upstream.affinity import DEFAULT_BLOCK_BYTES, DEFAULT_BLOCKS
from promptcache.engine.upstream.health import ReplicaHealth
from promptcache.engine.upstream.ring import DEFAULT_LOAD_FACTOR, DEFAULT_VNODES
from promptcache.errors import PromptCacheError, RequestTimeoutError, UpstreamError
from promptcache.store import redact_url


@dataclass(frozen=True, kw_only=True)
class ReplicaConfig:
    """How requests are spread and replicas watched (all validated: they come from users)."""

    load_factor: float = DEFAULT_LOAD_FACTOR
    """``c`` of the load bound: no replica holds more than ``c`` times the mean in flight."""
    min_load: int = 4
    """No replica counts as full below this many requests in flight (the bound's floor):
    an engine runs several at once (a promptcache replica ``--engine-workers``, vLLM
    dozens), so at low load a prefix's concurrent requests stay on its replica."""
    health_interval: float = 5.0
    """Seconds between active health checks of a healthy replica; 0 turns them off
    (a replica taken out then gets one request again after its backoff)."""
    health_timeout: float = 2.0
    base_backoff: float = 1.0
    max_backoff: float = 30.0
    affinity_blocks: int = DEFAULT_BLOCKS
    affinity_block_bytes: int = DEFAULT_BLOCK_BYTES
    vnodes: int = DEFAULT_VNODES

    def __post_init__(self) -> None:
        if not self.load_factor > 1.0:
            raise ValueError(
                f"the replica load factor must be > 1 (e.g. 1.25), got {self.load_factor!r}"
            )
        if isinstance(self.min_load, bool) or not isinstance(self.min_load, int):
            raise ValueError(f"the replica minimum load must be an integer, got {self.min_load!r}")
        if self.min_load < 1:
            raise ValueError(f"the replica minimum load must be >= 1, got {self.min_load!r}")
        if self.health_interval < 0:
            raise ValueError(
                f"the health-check interval must be >= 0 seconds, got {self.health_interval!r}"
            )
        for name in ("health_timeout", "base_backoff", "max_backoff"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.max_backoff < self.base_backoff:
            raise ValueError("max_backoff must be >= base_backoff")
        if self.affinity_blocks < 1 or self.affinity_block_bytes < 1 or self.vnodes < 1:
            raise ValueError("affinity_blocks, affinity_block_bytes and vnodes must be >= 1")


def replica_id(base_url: str) -> str:
    """The ring identity of a replica URL: scheme, lower-cased host, port and path;
    never its credentials, so gateways holding different keys agree."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"a replica URL must be http(s)://host[:port]/..., got {redact_url(base_url)!r}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"


@dataclass(kw_only=True)
class Replica:
    """One replica: its engine, label (``host:port``), health and running counts."""

    engine: Engine
    label: str
    health: ReplicaHealth = field(default_factory=ReplicaHealth)
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def snapshot(self) -> ReplicaSnapshot:
        return ReplicaSnapshot(
            replica=self.label,
            healthy=self.health.healthy,
            in_flight=self.in_flight,
            requests=self.requests,
            errors=self.errors,
            ejections=self.health.ejections,
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
            last_error=self.health.last_error,
        )


def labels(ids: Sequence[str]) -> list[str]:
    host_ports = [i.split("://", 1)[1].split("/", 1)[0] for i in ids]
    # host:port names a replica unless two share it (then the path tells them apart).
    return [
        hp if host_ports.count(hp) == 1 else i.split("://", 1)[1]
        for hp, i in zip(host_ports, ids, strict=True)
    ]


def fault(error: PromptCacheError) -> str | None:
    """Why ``error`` shows the replica failing (it is taken out), or None."""
    if isinstance(error, UpstreamError):
        status = error.upstream_status
        if status is None:
            return "unreachable or broken answer"
        if status >= 500:
            return f"answered {status}"
        return None
    if isinstance(error, RequestTimeoutError):
        return "timed out"
    return None


__all__ = ["Replica", "ReplicaConfig", "fault", "labels", "replica_id"]
