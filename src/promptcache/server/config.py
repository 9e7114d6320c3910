"""The server's configuration: one validated dataclass built by ``promptcache serve``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from promptcache.checkpoints import AutoCacheConfig

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""8 MiB: far above any prompt the local model's context can hold, far below memory trouble."""
DEFAULT_REQUEST_TIMEOUT = 600.0
"""10 minutes: far past any answer the local model gives (2,048 tokens take ~40 s
here), short enough that a stuck request is answered and its resources freed."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How the HTTP server behaves (the engine and response cache are passed separately).

    ``api_keys``: when non-empty, every API request needs one of them
    (``Authorization: Bearer`` or ``x-api-key``) and each key is its own tenant.
    ``admin_keys``: keys allowed to ``DELETE /v1/cache`` (each also works as an
    API key, as its own tenant); when only ``api_keys`` are set, clearing the
    cache is refused, since it would cross tenants.
    ``admin_endpoints``: False turns ``DELETE /v1/cache`` off whatever the key
    (403), for a server bound beyond loopback that needs no admin over HTTP.
    ``metrics_key``: when set, ``GET /metrics`` needs ``Authorization: Bearer
    <metrics_key>``; None leaves it open, as Prometheus scrapes usually are.
    ``cache_sampled``: also cache sampled requests (temperature > 0 without a
    seed); off by default because their answers are meant to vary.
    ``auto_cache``: the automatic checkpoint planner, or None for explicit
    ``cache_control`` only.
    """

    # Secrets are kept out of repr() so that logging a config never shows them.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_endpoints: bool = True
    metrics_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cache_sampled: bool = False
    auto_cache: AutoCacheConfig | None = None
    model_supports_caching: bool | Callable[[str], bool] = True
    """Whether the engine honours ``cache_control``, for every model or per model name
    (an upstream's provider profile: Claude through OpenRouter does, GPT does not)."""
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    """Seconds one chat request may take, queueing and streaming included (None: no
    limit); past it the client gets a 504 and the generation is cancelled."""
    forward_keys: bool = False
    """``--upstream-key-mode forward``: each caller's own key goes to the upstream and
    names its tenant (``api_keys`` must be empty; see :mod:`promptcache.server.auth`)."""
    tenant_secret: str | None = field(default=None, repr=False)
    """The HMAC secret tenant ids are derived under; None: the unkeyed hash."""
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    """Extra model names, name -> served model (``"*"``: every unknown name); see
    :class:`promptcache.server.models.ModelCatalog`. Responses echo the name asked for."""

    def __post_init__(self) -> None:
        if self.request_timeout is not None and not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        metrics_keys = () if self.metrics_key is None else (self.metrics_key,)
        for name, keys in (
            ("api_keys", self.api_keys),
            ("admin_keys", self.admin_keys),
            ("metrics_key", metrics_keys),
        ):
            for key in keys:
                if not key or key != key.strip():
                    raise ValueError(
                        f"{name} must not contain empty keys or keys with surrounding spaces"
                    )
