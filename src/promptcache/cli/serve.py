"""``promptcache serve``: the HTTP server on the local engine or in front of an upstream.

Builds the engine (the embedded SmolLM2 model by default, any GGUF file or
Hugging Face directory with ``--model``, or ``--upstream-url``), the response
cache (``--store``, SQLite under ``./.promptcache/`` by default) and the app,
then runs uvicorn and prints where it listens and how to call it.

Bound beyond loopback, the server refuses to start unless the admin action
(``DELETE /v1/cache``) is protected by an admin key or switched off with
``--no-admin-endpoints``: otherwise anyone who can reach the port could wipe
every tenant's cache. The banner never shows a secret (store and upstream URLs
are redacted, keys are only said to be required). This module owns the command
and the server's run; what it builds and checks first is ``_serve_setup.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any, cast

import typer
import uvicorn
from rich.console import Console

from promptcache.checkpoints import AutoCacheConfig, UnsupportedModelBehavior
from promptcache.cli._app import app
from promptcache.cli._serve_options import (
    AccessLogOption,
    AdminEndpointsOption,
    AdminKeyOption,
    ApiKeyOption,
    AutoCacheMinMessagesOption,
    AutoCacheOption,
    AutoCacheTtlOption,
    CacheSampledOption,
    CacheTtlOption,
    DecodePrecisionOption,
    EngineWorkersOption,
    HostOption,
    KvCacheBytesOption,
    KvDiskBytesOption,
    KvDiskPathOption,
    KvDtypeOption,
    MaxBodyBytesOption,
    MaxQueueOption,
    MetricsKeyOption,
    MinCacheTokensOption,
    ModelAliasFileOption,
    ModelAliasOption,
    ModelOption,
    PortOption,
    PrefillPrecisionOption,
    PricesOption,
    ReplicaHealthIntervalOption,
    ReplicaLoadFactorOption,
    ReplicaMinLoadOption,
    RequestTimeoutOption,
    ShutdownTimeoutOption,
    StoreOption,
    TenantSecretOption,
    UnsupportedModelBehaviorOption,
    UpstreamApiKeyOption,
    UpstreamConnectTimeoutOption,
    UpstreamDialectOption,
    UpstreamKeyModeOption,
    UpstreamMaxRetriesOption,
    UpstreamModelOption,
    UpstreamModelsRefreshOption,
    UpstreamProviderOption,
    UpstreamReadTimeoutOption,
    UpstreamUrlsOption,
    WarmOption,
)
from promptcache.cli._serve_setup import (
    DEFAULT_KV_DISK_BYTES,
    DEFAULT_STORE,
    KV_DTYPE_NAMES,
    Banner,
    EngineChoice,
    admin_text,
    build_engine,
    is_loopback,
    keys_from_env,
    open_cache,
    parse_size,
    print_banner,
    provider_profile,
    resolve_key_mode,
    tenant_secret_for,
    unprotected_admin_message,
)
from promptcache.cli._warm import read_warm_file, warm_prefixes
from promptcache.cli.stats import DEFAULT_KV_DISK_PATH
from promptcache.cost.ledger import CostLedger
from promptcache.cost.pricing import PriceTable
from promptcache.engine.base import Engine
from promptcache.model.precision_names import DECODE_PRECISIONS, PROMPT_PRECISIONS
from promptcache.server.app import create_app
from promptcache.server.config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    ServerConfig,
)
from promptcache.server.cost_observer import CostObserver, register_ledger_metrics
from promptcache.server.models import (
    ALIASES_ENV,
    aliases_from_env,
    load_alias_file,
    parse_aliases,
)

__all__ = ["DEFAULT_STORE", "is_loopback", "parse_size", "serve", "unprotected_admin_message"]

console = Console(stderr=True)


def _build_engine(choice: EngineChoice) -> tuple[Engine, str]:
    """The engine and a one-line description of it, a local model's loading shown on
    this module's ``console`` (looked up here, so tests can replace either)."""
    return build_engine(choice, console)


class _Server(uvicorn.Server):
    """Prints the banner once the socket is bound (not before, so it never lies), and
    marks the app draining on SIGTERM/SIGINT so ``/readyz`` turns 503 at once while
    uvicorn finishes the requests in flight (``--shutdown-timeout``)."""

    def __init__(self, config: uvicorn.Config, banner: Any, on_exit_signal: Any) -> None:
        super().__init__(config)
        self._banner = banner
        self._on_exit_signal = on_exit_signal

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._banner()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._on_exit_signal()
        super().handle_exit(sig, frame)
        # uvicorn re-raises a captured signal once it has stopped, and the default
        # action would kill the process before the engine and store are closed
        # (SQLite's WAL checkpoint, Redis' pending counts): a drained stop exits 0.
        self._captured_signals.clear()


@app.command()
def serve(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    model: ModelOption = None,
    store: StoreOption = DEFAULT_STORE,
    cache_ttl: CacheTtlOption = None,
    kv_cache_bytes: KvCacheBytesOption = None,
    min_cache_tokens: MinCacheTokensOption = 1024,
    api_key: ApiKeyOption = None,
    admin_key: AdminKeyOption = None,
    admin_endpoints: AdminEndpointsOption = True,
    metrics_key: MetricsKeyOption = None,
    upstream_urls: UpstreamUrlsOption = None,
    upstream_dialect: UpstreamDialectOption = None,
    upstream_provider: UpstreamProviderOption = None,
    unsupported_model_behavior: UnsupportedModelBehaviorOption = "warn",
    upstream_api_key: UpstreamApiKeyOption = None,
    upstream_model: UpstreamModelOption = None,
    upstream_key_mode: UpstreamKeyModeOption = "server",
    tenant_secret: TenantSecretOption = None,
    upstream_connect_timeout: UpstreamConnectTimeoutOption = 5.0,
    upstream_read_timeout: UpstreamReadTimeoutOption = 600.0,
    upstream_max_retries: UpstreamMaxRetriesOption = 2,
    upstream_models_refresh: UpstreamModelsRefreshOption = 300.0,
    replica_load_factor: ReplicaLoadFactorOption = None,
    replica_min_load: ReplicaMinLoadOption = None,
    replica_health_interval: ReplicaHealthIntervalOption = None,
    max_queue: MaxQueueOption = 32,
    # 8: on a 2-core Zen 5, 8 HTTP clients got 326 tok/s (median of 4) against 267 with
    # 4 workers, whose batches hold 4 rows while the other 4 requests queue.
    engine_workers: EngineWorkersOption = 8,
    decode_precision: DecodePrecisionOption = "auto",
    prefill_precision: PrefillPrecisionOption = "auto",
    kv_dtype: KvDtypeOption = None,
    kv_disk_path: KvDiskPathOption = None,
    kv_disk_bytes: KvDiskBytesOption = None,
    max_body_bytes: MaxBodyBytesOption = str(DEFAULT_MAX_BODY_BYTES),
    auto_cache: AutoCacheOption = False,
    auto_cache_ttl: AutoCacheTtlOption = "5m",
    auto_cache_min_messages: AutoCacheMinMessagesOption = 0,
    cache_sampled: CacheSampledOption = False,
    request_timeout: RequestTimeoutOption = DEFAULT_REQUEST_TIMEOUT,
    shutdown_timeout: ShutdownTimeoutOption = 30,
    access_log: AccessLogOption = False,
    prices: PricesOption = None,
    model_alias: ModelAliasOption = None,
    model_alias_file: ModelAliasFileOption = None,
    warm: WarmOption = None,
) -> None:
    """Serve the OpenAI and Anthropic APIs with both caches in front of the model."""
    upstream_url = upstream_urls[0] if upstream_urls else None
    replica_options = {
        "--replica-load-factor": replica_load_factor,
        "--replica-min-load": replica_min_load,
        "--replica-health-interval": replica_health_interval,
    }
    for flag, value in replica_options.items():
        if value is not None and len(upstream_urls or ()) < 2:
            raise typer.BadParameter(
                "applies to replicas: give --upstream-url once per replica", param_hint=flag
            )
    if upstream_dialect is not None and upstream_dialect not in ("openai", "anthropic"):
        raise typer.BadParameter("must be openai or anthropic", param_hint="--upstream-dialect")
    if unsupported_model_behavior not in ("ignore", "warn", "raise"):
        raise typer.BadParameter(
            "must be ignore, warn or raise", param_hint="--unsupported-model-behavior"
        )
    for flag, precision_name, allowed in (
        ("--decode-precision", decode_precision, DECODE_PRECISIONS),
        ("--prefill-precision", prefill_precision, PROMPT_PRECISIONS),
    ):
        if precision_name not in allowed:
            raise typer.BadParameter(f"must be one of {', '.join(allowed)}", param_hint=flag)
    if kv_dtype is not None and kv_dtype not in KV_DTYPE_NAMES:
        choices = ", ".join(KV_DTYPE_NAMES)
        raise typer.BadParameter(f"must be one of {choices}", param_hint="--kv-dtype")
    if upstream_url and kv_dtype is not None:
        raise typer.BadParameter(
            "applies to the local engine; an --upstream-url proxy holds no KV",
            param_hint="--kv-dtype",
        )
    for flag, precision in (
        ("--decode-precision", decode_precision),
        ("--prefill-precision", prefill_precision),
    ):
        if upstream_url and precision != "auto":
            raise typer.BadParameter(
                "applies to the local engine; an --upstream-url proxy runs no model",
                param_hint=flag,
            )
    for flag, given in (("--kv-disk-path", kv_disk_path), ("--kv-disk-bytes", kv_disk_bytes)):
        if upstream_url and given is not None:
            raise typer.BadParameter(
                "applies to the local engine; an --upstream-url proxy holds no KV",
                param_hint=flag,
            )
    api_keys = [*(api_key or []), *keys_from_env("PROMPTCACHE_API_KEYS")]
    admin_keys = [*(admin_key or []), *keys_from_env("PROMPTCACHE_ADMIN_KEYS")]
    forward_keys = resolve_key_mode(
        upstream_key_mode,
        upstream_url=upstream_url,
        upstream_api_key=upstream_api_key,
        api_keys=bool(api_keys),
    )
    if admin_endpoints and not admin_keys:
        refusal = unprotected_admin_message(host)
        if refusal is not None:
            console.print(f"[bold red]error:[/] {refusal}", highlight=False)
            raise typer.Exit(2)
    try:
        profile = provider_profile(upstream_url, upstream_provider, upstream_dialect)
        auto = (
            AutoCacheConfig(
                ttl="1h" if auto_cache_ttl == "1h" else "5m",
                min_messages_to_cache=auto_cache_min_messages,
                unsupported_model_behavior=cast(
                    UnsupportedModelBehavior, unsupported_model_behavior
                ),
            )
            if auto_cache
            else None
        )
        if auto_cache_ttl not in ("5m", "1h"):
            raise ValueError(f"--auto-cache-ttl must be 5m or 1h, got {auto_cache_ttl!r}")
        aliases = {
            # Later sources win: the file, then the environment, then the command line.
            **(load_alias_file(model_alias_file) if model_alias_file else {}),
            **aliases_from_env(os.environ.get(ALIASES_ENV)),
            **parse_aliases(model_alias or ()),
        }
        config = ServerConfig(
            api_keys=tuple(api_keys),
            admin_keys=tuple(admin_keys),
            admin_endpoints=admin_endpoints,
            metrics_key=metrics_key or None,
            max_body_bytes=parse_size(max_body_bytes),
            cache_sampled=cache_sampled,
            request_timeout=request_timeout or None,
            auto_cache=auto,
            # Per model at an upstream: Claude through OpenRouter takes markers, GPT does not.
            model_supports_caching=True if profile is None else profile.honours_markers,
            model_aliases=aliases,
            forward_keys=forward_keys,
            tenant_secret=tenant_secret_for(
                tenant_secret, needed=bool(api_keys or admin_keys or forward_keys)
            ),
        )
        table = PriceTable.from_toml(prices) if prices else PriceTable.builtin()
        if profile is not None:  # unlisted models priced with the provider's multipliers
            table = table.with_default_profile(profile.pricing)
        ledger = CostLedger(prices=table)
        cache = open_cache(store, cache_ttl)
        engine, engine_text = _build_engine(
            EngineChoice(
                model=model,
                kv_cache_bytes=parse_size(kv_cache_bytes) if kv_cache_bytes else None,
                min_cache_tokens=min_cache_tokens,
                upstream_url=upstream_url,
                upstream_urls=tuple(upstream_urls or ()),
                replica_load_factor=replica_load_factor,
                replica_min_load=replica_min_load,
                replica_health_interval=replica_health_interval,
                upstream_dialect=profile.dialect if profile else "openai",
                upstream_provider=profile.name if profile else "",
                unsupported_model_behavior=unsupported_model_behavior,
                upstream_api_key=upstream_api_key,
                upstream_models=tuple(upstream_model or ()),
                max_queue=max_queue,
                workers=engine_workers,
                decode_precision=decode_precision,
                prefill_precision=prefill_precision,
                kv_dtype=kv_dtype or "float32",
                kv_disk_path=kv_disk_path or DEFAULT_KV_DISK_PATH,
                kv_disk_bytes=parse_size(kv_disk_bytes or DEFAULT_KV_DISK_BYTES),
                upstream_connect_timeout=upstream_connect_timeout,
                upstream_read_timeout=upstream_read_timeout,
                upstream_max_retries=upstream_max_retries,
                upstream_models_refresh=upstream_models_refresh,
            )
        )
        server_app = create_app(  # checks each alias names a served model
            config,
            engine=engine,
            cache=cache,
            observers=[CostObserver(ledger)],
            stats_sections={"costs": ledger.snapshot},
        )
        if warm is not None:
            _warm_up(engine, warm, server_app)
    except (ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    register_ledger_metrics(ledger, server_app.state.metrics.registry)
    models = engine.models()
    first_model = models[0].id if models else "your-model"
    server = _Server(
        uvicorn.Config(
            server_app,
            host=host,
            port=port,
            loop="uvloop" if _has("uvloop") else "asyncio",
            http="httptools" if _has("httptools") else "h11",
            log_level="info" if access_log else "warning",
            access_log=access_log,
            timeout_graceful_shutdown=shutdown_timeout,
        ),
        on_exit_signal=lambda: setattr(server_app.state, "draining", True),
        banner=lambda: print_banner(
            Banner(
                host=host,
                port=port,
                engine=engine_text,
                store=cache.store.url if cache is not None else "off",
                model=first_model,
                keys=bool(api_keys or admin_keys or forward_keys),
                auto=auto is not None,
                admin=admin_text(
                    admin_endpoints=admin_endpoints,
                    admin_keys=bool(admin_keys),
                    # Forwarded keys are tenants too: clearing needs an admin key.
                    api_keys=bool(api_keys) or forward_keys,
                ),
                metrics_key=bool(metrics_key),
                forwarded=forward_keys,
            ),
            console,
        ),
    )
    try:
        server.run()
    finally:
        # Bounded: a worker stuck in native code must not keep a stopped server alive.
        with contextlib.suppress(TimeoutError):
            asyncio.run(asyncio.wait_for(engine.aclose(), max(shutdown_timeout, 1.0)))
        if cache is not None:
            cache.store.close()


def _warm_up(engine: Engine, path: Path, server_app: Any) -> None:
    """``--warm``: every line checked, then each prefix pinned (``_warm.py``)."""
    flow = server_app.state.flow
    lines = read_warm_file(path, keyring=flow.keyring, catalog=flow.catalog)
    pinned = asyncio.run(warm_prefixes(engine, path, lines, console))
    tokens = sum(prefix.cached_tokens for prefix in pinned)
    console.print(f"Pinned {len(pinned)} prefixes ({tokens} tokens) from {path}.", highlight=False)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
