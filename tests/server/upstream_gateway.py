"""A promptcache gateway on loopback in front of a :class:`FakeProvider`, for tests that
drive it with the official SDKs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from promptcache.engine.upstream import RetryPolicy, UpstreamConfig, UpstreamEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.fake_provider import FakeProvider
from tests.server.live import live_server

TENANT_SECRET = "test-tenant-secret-0123456789abcdef"


@contextlib.contextmanager
def gateway(
    provider: FakeProvider | None,
    *,
    dialect: str = "openai",
    forward: bool = True,
    request_timeout: float | None = None,
    retries: int = 2,
    read_timeout: float = 600.0,
    upstream_url: str | None = None,
) -> Iterator[str]:
    """The gateway's base URL; ``upstream_url`` instead of a provider points it anywhere
    (a closed port). Retries back off in hundredths of a second."""
    with contextlib.ExitStack() as stack:
        if provider is not None:
            upstream_url = stack.enter_context(live_server(provider.app))
        assert upstream_url is not None
        engine = UpstreamEngine(
            UpstreamConfig(
                base_url=f"{upstream_url}/v1" if dialect == "openai" else upstream_url,
                dialect=dialect,
                timeout=read_timeout,
                retry=RetryPolicy(max_retries=retries, initial_delay=0.01, max_delay=0.02),
            )
        )
        app = create_app(
            ServerConfig(
                forward_keys=forward,
                tenant_secret=TENANT_SECRET,
                request_timeout=request_timeout,
                model_supports_caching=dialect == "anthropic",
            ),
            engine=engine,
            cache=ResponseCache(open_store("memory://")),
        )
        try:
            yield stack.enter_context(live_server(app))
        finally:
            stack.close()
            with contextlib.suppress(Exception):  # its connections' loop has stopped
                asyncio.run(engine.aclose())
