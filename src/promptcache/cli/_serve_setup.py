"""What ``promptcache serve`` sets up before it runs: the engine, the response cache,
the banner and the checks on its options.

:func:`build_engine` loads the local model (or connects the upstream) and
describes it in one line; :func:`open_cache` opens the response-cache store;
:func:`print_banner` says where the server listens and how to call it, never a
secret (store and upstream URLs are redacted, keys are only said to be
required); :func:`is_loopback` and :func:`unprotected_admin_message` decide
whether a host may serve open admin endpoints; :func:`parse_size` reads sizes
such as ``512MB``. The command itself, which owns the console, is ``serve.py``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console

from promptcache.cli._progress import loading_progress
from promptcache.engine.base import Engine
from promptcache.response_cache import ResponseCache
from promptcache.store import redact_url

if TYPE_CHECKING:  # the engine packages load only when an upstream is configured
    from promptcache.engine.upstream.profiles import ProviderProfile

DEFAULT_STORE = "sqlite:///.promptcache/responses.db"
DEFAULT_KV_DISK_BYTES = "4GB"
KV_DTYPE_NAMES = ("float32", "float16", "bfloat16")
"""``--kv-dtype`` choices: ``promptcache.prefix.pool.KV_DTYPES``'s names, spelled out
here so the CLI starts without importing torch."""
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``"512MB"``, ``"1G"``, ``"1.5GiB"`` or plain bytes as an int (units are powers of 1024)."""
    match = _SIZE.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a size; use bytes or e.g. 512MB, 2GB")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[(unit or "")[:1].lower()])


def keys_from_env(name: str) -> list[str]:
    return [key.strip() for key in os.environ.get(name, "").split(",") if key.strip()]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine: ``localhost``,
    127.0.0.0/8 or ``::1``. Any other name counts as reachable from outside, since
    what it resolves to is not ours to check."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def unprotected_admin_message(host: str) -> str | None:
    """Why the server must not start bound to ``host`` with open admin endpoints, or None."""
    if is_loopback(host):
        return None
    return (
        f"--host {host} is reachable beyond this machine, and without an admin key anyone "
        "who can reach it could clear every tenant's cache (DELETE /v1/cache). Fix: pass "
        "--admin-key KEY (or set PROMPTCACHE_ADMIN_KEYS=KEY), or --no-admin-endpoints to "
        "turn that endpoint off; or bind to 127.0.0.1."
    )


@dataclass(frozen=True, kw_only=True)
class EngineChoice:
    model: str | None
    kv_cache_bytes: int | None
    min_cache_tokens: int
    upstream_url: str | None
    upstream_dialect: str
    upstream_api_key: str | None
    upstream_models: tuple[str, ...]
    max_queue: int
    workers: int
    decode_precision: str = "auto"
    prefill_precision: str = "auto"
    upstream_urls: tuple[str, ...] = ()
    """Every ``--upstream-url``; two or more are replicas of one model."""
    replica_load_factor: float | None = None
    replica_min_load: int | None = None
    replica_health_interval: float | None = None
    kv_dtype: str = "float32"
    kv_disk_path: str | None = None
    """The KV disk tier's directory (None or ``kv_disk_bytes`` 0: no disk tier)."""
    kv_disk_bytes: int = 0
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 600.0
    upstream_max_retries: int = 2
    upstream_models_refresh: float = 300.0
    upstream_provider: str = ""
    """``--upstream-provider`` (empty: the one the URL names, else the dialect's)."""
    unsupported_model_behavior: str = "warn"


def build_engine(choice: EngineChoice, console: Console) -> tuple[Engine, str]:
    """The engine and a one-line description of it (a local model's loading on ``console``)."""
    if len(choice.upstream_urls) > 1:
        return build_replicas(choice, console)
    if choice.upstream_url:
        from promptcache.engine.upstream import RetryPolicy, UpstreamConfig, UpstreamEngine

        upstream = UpstreamEngine(
            UpstreamConfig(
                base_url=choice.upstream_url,
                api_key=choice.upstream_api_key,
                dialect=choice.upstream_dialect,
                provider=choice.upstream_provider,
                unsupported_model_behavior=choice.unsupported_model_behavior,
                models=choice.upstream_models or None,
                connect_timeout=choice.upstream_connect_timeout,
                timeout=choice.upstream_read_timeout,
                retry=RetryPolicy(max_retries=choice.upstream_max_retries),
                models_refresh=choice.upstream_models_refresh,
            )
        )
        shown_url = redact_url(choice.upstream_url)
        profile = upstream.profile
        text = f"upstream {profile.name} ({profile.dialect} API) at {shown_url}"
        if profile.cached_tokens_note:  # else its cached_tokens read as 0
            text += f" (cached tokens: {profile.cached_tokens_note})"
        return upstream, text
    from promptcache.engine.local import LocalEngine, LocalEngineConfig
    from promptcache.engine.threaded import ThreadedEngine
    from promptcache.prefix.cache import PrefixCacheConfig

    prefix_options: dict[str, Any] = {
        "min_cache_tokens": choice.min_cache_tokens,
        "kv_dtype": choice.kv_dtype,
    }
    if choice.kv_cache_bytes is not None:
        prefix_options["kv_cache_bytes"] = choice.kv_cache_bytes
    if choice.kv_disk_path and choice.kv_disk_bytes > 0:
        prefix_options["disk_path"] = choice.kv_disk_path
        prefix_options["disk_bytes"] = choice.kv_disk_bytes
    console.print(f"Loading model [bold]{choice.model or 'embedded SmolLM2-135M-Instruct'}[/]…")
    config = LocalEngineConfig(
        model=choice.model,
        prefix_cache=PrefixCacheConfig(**prefix_options),
        decode_precision=choice.decode_precision,
        prefill_precision=choice.prefill_precision,
    )
    with loading_progress(console) as progress:
        local = LocalEngine.from_config(config, progress=progress)
    names = ", ".join(info.id for info in local.models())
    engine = ThreadedEngine(local, max_queue=choice.max_queue, workers=choice.workers)
    precisions = f"decode {local.decode_precision}, prefill {local.prefill_precision}"
    return engine, f"local engine serving {names} ({precisions})"


def build_replicas(choice: EngineChoice, console: Console) -> tuple[Engine, str]:
    """One engine per ``--upstream-url`` (each built as a single upstream is), routed by
    prefix affinity (``engine/upstream/replicas.py``)."""
    from promptcache.engine.upstream.replicas import ReplicaConfig, ReplicaEngine

    defaults = ReplicaConfig()
    config = ReplicaConfig(  # checked before any replica is connected
        load_factor=(
            defaults.load_factor
            if choice.replica_load_factor is None
            else choice.replica_load_factor
        ),
        min_load=(
            defaults.min_load if choice.replica_min_load is None else choice.replica_min_load
        ),
        health_interval=(
            defaults.health_interval
            if choice.replica_health_interval is None
            else choice.replica_health_interval
        ),
    )
    replicas = [
        (url, build_engine(replace(choice, upstream_url=url, upstream_urls=()), console)[0])
        for url in choice.upstream_urls
    ]
    engine = ReplicaEngine(replicas, config)
    shown = ", ".join(r.label for r in engine.replicas)
    return engine, (
        f"{len(replicas)} upstream {choice.upstream_dialect} replicas ({shown}), prefix "
        f"affinity, load factor {config.load_factor}, minimum load {config.min_load}"
    )


def provider_profile(
    url: str | None, provider: str | None, dialect: str | None
) -> ProviderProfile | None:
    """The upstream's provider profile: ``--upstream-provider``, else the one the URL
    names, else the plain profile of ``--upstream-dialect``; None for the local engine."""
    if not url:
        if provider:
            raise ValueError("--upstream-provider applies to an upstream: give --upstream-url")
        return None
    from promptcache.engine.upstream.profiles import resolve_provider

    return resolve_provider(url, provider, dialect)


def open_cache(store_url: str, ttl: float | None) -> ResponseCache | None:
    if store_url.lower() in ("none", "off", ""):
        return None
    from promptcache.store import open_store

    if store_url.startswith("sqlite:///"):
        path = Path(store_url.removeprefix("sqlite:///").split("?", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
    return ResponseCache(open_store(store_url), ttl=ttl)


KEY_MODES = ("server", "forward")


def resolve_key_mode(
    mode: str, *, upstream_url: str | None, upstream_api_key: str | None, api_keys: bool
) -> bool:
    """Whether callers' keys are forwarded (``--upstream-key-mode forward``), after the
    checks that make the other options mean something beside it."""
    if mode not in KEY_MODES:
        raise typer.BadParameter("must be server or forward", param_hint="--upstream-key-mode")
    if mode == "server":
        return False
    if not upstream_url:
        raise typer.BadParameter(
            "forward sends callers' keys to an upstream: give --upstream-url",
            param_hint="--upstream-key-mode",
        )
    if "@" in urlsplit(upstream_url).netloc:
        raise typer.BadParameter(
            "with forward, each caller's own key goes to the upstream; credentials in "
            "--upstream-url would go with it (or replace it): drop them from the URL",
            param_hint="--upstream-key-mode",
        )
    if upstream_api_key:
        raise typer.BadParameter(
            "with forward, each caller's own key goes to the upstream, so the server's "
            "--upstream-api-key (or PROMPTCACHE_UPSTREAM_API_KEY) would never be sent: drop it",
            param_hint="--upstream-key-mode",
        )
    if api_keys:
        raise typer.BadParameter(
            "with forward, the caller's one key goes to the provider, so promptcache's own "
            "--api-key (PROMPTCACHE_API_KEYS) cannot also be asked for: drop it",
            param_hint="--upstream-key-mode",
        )
    return True


def tenant_secret_for(given: str | None, *, needed: bool) -> str | None:
    """The tenant HMAC secret: ``--tenant-secret``/``PROMPTCACHE_TENANT_SECRET``, else
    the one kept in ``./.promptcache/tenant-secret`` (created once, mode 0600) when
    keys make tenants (``needed``); None when every caller is the one open tenant."""
    from promptcache.server.auth import DEFAULT_TENANT_SECRET_FILE, load_tenant_secret

    if given is not None:
        if len(given.strip()) < 16:
            raise typer.BadParameter("must be at least 16 characters", param_hint="--tenant-secret")
        return given.strip()
    if not needed:
        return None
    DEFAULT_TENANT_SECRET_FILE.parent.mkdir(parents=True, exist_ok=True)
    return load_tenant_secret(DEFAULT_TENANT_SECRET_FILE)


@dataclass(frozen=True, kw_only=True)
class Banner:
    """What the banner says; secrets never reach it (``store`` is a redacted URL)."""

    host: str
    port: int
    engine: str
    store: str
    model: str
    keys: bool
    auto: bool
    admin: str
    """How ``DELETE /v1/cache`` is protected, in words."""
    metrics_key: bool
    forwarded: bool = False
    """Callers' own keys go to the upstream (``--upstream-key-mode forward``)."""


def admin_text(*, admin_endpoints: bool, admin_keys: bool, api_keys: bool) -> str:
    if not admin_endpoints:
        return "off (--no-admin-endpoints)"
    if admin_keys:
        return "admin key required"
    if api_keys:
        return "refused (no --admin-key)"
    return "open (loopback only)"


def print_banner(banner: Banner, console: Console) -> None:
    host, port, model, keys = banner.host, banner.port, banner.model, banner.keys
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown_host}:{port}"
    auth = ' -H "Authorization: Bearer $KEY"' if keys else ""
    console.print(f"[bold green]promptcache[/] listening on [bold]{base}[/]")
    console.print(f"  engine: {banner.engine}", highlight=False)
    console.print(f"  response cache: {banner.store}", highlight=False)
    if banner.forwarded:
        console.print("  api keys: each caller's own, forwarded to the upstream (one tenant each)")
    else:
        console.print(f"  api keys: {'required' if keys else 'none (open)'}")
    console.print(f"  cache clearing: {banner.admin}")
    console.print(f"  metrics: {'key required' if banner.metrics_key else 'open'}")
    console.print(f"  automatic checkpoints: {'on' if banner.auto else 'off'}")
    console.print("Try it:")
    console.print(
        f"  curl -s {base}/v1/chat/completions{auth} -H 'content-type: application/json' "
        f'-d \'{{"model": "{model}", "max_tokens": 32, '
        '"messages": [{"role": "user", "content": "Say hello"}]}\'',
        soft_wrap=True,
        highlight=False,
    )
    console.print(f"  OpenAI SDK:    OpenAI(base_url='{base}/v1', api_key='...')", highlight=False)
    console.print(f"  Anthropic SDK: Anthropic(base_url='{base}', api_key='...')", highlight=False)
    console.print(f"  stats: {base}/v1/cache/stats   metrics: {base}/metrics", highlight=False)
