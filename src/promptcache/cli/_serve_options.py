"""The options of ``promptcache serve``, one annotated type each.

``serve`` takes some forty options; declaring them here keeps the command's own
module to what it does with them. Each alias is ``Annotated[type, typer.Option(...)]``
and is used in ``serve``'s signature as ``name: NameOption = default``, so the flag
name, its help text and its default stay where typer reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptcache.cli._serve_setup import DEFAULT_KV_DISK_BYTES
from promptcache.cli.stats import DEFAULT_KV_DISK_PATH

HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]

PortOption = Annotated[int, typer.Option(help="TCP port.")]

ModelOption = Annotated[
    str | None,
    typer.Option(help="GGUF file or Hugging Face model directory (default: embedded)."),
]

StoreOption = Annotated[
    str,
    typer.Option(
        # Also from the environment, as for stats/clear: a URL with a password
        # on the command line is visible to every user of the machine (ps).
        envvar="PROMPTCACHE_STORE",
        help="Response-cache store URL (memory://, sqlite:///, redis://, none).",
    ),
]

CacheTtlOption = Annotated[
    float | None, typer.Option(help="Seconds a stored response stays valid (default: store's).")
]

KvCacheBytesOption = Annotated[
    str | None, typer.Option(help="KV prefix-cache budget, e.g. 512MB or 2GB.")
]

MinCacheTokensOption = Annotated[
    int, typer.Option(help="Shortest prefix the KV cache reads or writes.")
]

ApiKeyOption = Annotated[
    list[str] | None,
    typer.Option(help="API key (repeatable; also PROMPTCACHE_API_KEYS=k1,k2). Each is a tenant."),
]

AdminKeyOption = Annotated[
    list[str] | None,
    typer.Option(help="Key allowed to DELETE /v1/cache (repeatable; PROMPTCACHE_ADMIN_KEYS)."),
]

AdminEndpointsOption = Annotated[
    bool,
    typer.Option(
        help="Serve DELETE /v1/cache; --no-admin-endpoints turns it off (needed to bind "
        "beyond loopback without --admin-key)."
    ),
]

MetricsKeyOption = Annotated[
    str | None,
    typer.Option(
        envvar="PROMPTCACHE_METRICS_KEY",
        help="Key GET /metrics requires as 'Authorization: Bearer KEY' (default: open).",
    ),
]

UpstreamUrlsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--upstream-url",
        help="Proxy to this provider base URL instead of the local model; repeat it for "
        "replicas of one model (each request routed by prefix affinity).",
    ),
]

UpstreamDialectOption = Annotated[
    str | None,
    typer.Option(help="Upstream API: openai or anthropic (default: the provider's, else openai)."),
]

UpstreamProviderOption = Annotated[
    str | None,
    typer.Option(
        help="Upstream provider profile (what is sent, how usage is read): openai, "
        "openrouter, anthropic, glm, deepseek, vllm, sglang or llamacpp (default: "
        "detected from the URL, else plain --upstream-dialect)."
    ),
]

UnsupportedModelBehaviorOption = Annotated[
    str,
    typer.Option(
        help="cache_control toward a provider or model that cannot honour it: ignore "
        "(drop), warn (drop, one warning per model) or raise (a 400)."
    ),
]

UpstreamApiKeyOption = Annotated[
    str | None,
    typer.Option(envvar="PROMPTCACHE_UPSTREAM_API_KEY", help="Key sent to the upstream."),
]

UpstreamModelOption = Annotated[
    list[str] | None,
    typer.Option(help="Model id the upstream serves (repeatable; default: any)."),
]

UpstreamKeyModeOption = Annotated[
    str,
    typer.Option(
        help="server: send --upstream-api-key; forward: send each caller's own key "
        "(bring your own key; each key its own tenant)."
    ),
]

TenantSecretOption = Annotated[
    str | None,
    typer.Option(
        envvar="PROMPTCACHE_TENANT_SECRET",
        help="HMAC secret tenant ids are derived under (default: made once in "
        "./.promptcache/tenant-secret); gateways sharing a store must share it.",
    ),
]

UpstreamConnectTimeoutOption = Annotated[
    float, typer.Option(help="Seconds to connect to the upstream.")
]

UpstreamReadTimeoutOption = Annotated[
    float, typer.Option(help="Seconds the upstream may go silent before a 504.")
]

UpstreamMaxRetriesOption = Annotated[
    int,
    typer.Option(help="Retries on connect errors, timeouts, 429, 5xx, 529 (backoff, Retry-After)."),
]

UpstreamModelsRefreshOption = Annotated[
    float, typer.Option(help="Seconds a discovered upstream model list is kept.")
]

ReplicaLoadFactorOption = Annotated[
    float | None,
    typer.Option(
        help="Replicas: no replica takes more than this times the mean requests in "
        "flight; the rest move on along the ring (default 1.25; > 1)."
    ),
]

ReplicaMinLoadOption = Annotated[
    int | None,
    typer.Option(
        help="Replicas: no replica counts as full below this many requests in flight, "
        "so at low load a prefix's concurrent requests stay on its replica (default 4)."
    ),
]

ReplicaHealthIntervalOption = Annotated[
    float | None,
    typer.Option(
        help="Replicas: seconds between health checks (default 5; 0: none, a failed "
        "replica then gets a request again after its backoff)."
    ),
]

MaxQueueOption = Annotated[
    int, typer.Option(help="Requests waiting for the local engine before 429s.")
]

EngineWorkersOption = Annotated[
    int,
    typer.Option(help="Requests the local engine runs at once (their decode steps batched)."),
]

DecodePrecisionOption = Annotated[
    str,
    typer.Option(
        help="Decode weights of the local engine: int4 (a Q4_0/Q4_1 GGUF's own 4-bit "
        "blocks), float16, float32 (exact), or auto (int4 where the GGUF has them, "
        "else float16)."
    ),
]

PrefillPrecisionOption = Annotated[
    str,
    typer.Option(
        help="Prompt weights of the local engine: int4 (prompt tokens through the fused "
        "decode layers on a Q4 GGUF's blocks; needs int4 decode and a float32 KV), bfloat16 "
        "(native bfloat16 matmuls in fixed-size tiles), float32 (exact), or auto (int4 "
        "where it runs, else bfloat16 where it measures faster at start-up, else float32)."
    ),
]

KvDtypeOption = Annotated[
    str | None,
    typer.Option(
        help="KV dtype of the local engine's prefix cache and attention: float32 "
        "(default, exact) or float16/bfloat16 (twice the cached tokens per byte).",
    ),
]

KvDiskPathOption = Annotated[
    str | None,
    typer.Option(
        help="Directory of the KV prefix cache's disk tier: blocks written from RAM, "
        f"kept across restarts (local engine; default {DEFAULT_KV_DISK_PATH}).",
    ),
]

KvDiskBytesOption = Annotated[
    str | None,
    typer.Option(
        help=f"Disk tier budget, e.g. 20GB (default {DEFAULT_KV_DISK_BYTES}); 0 turns "
        "the disk tier off."
    ),
]

MaxBodyBytesOption = Annotated[str, typer.Option(help="Largest accepted request body, e.g. 8MB.")]

AutoCacheOption = Annotated[
    bool, typer.Option(help="Place cache_control checkpoints automatically.")
]

AutoCacheTtlOption = Annotated[str, typer.Option(help="TTL of automatic checkpoints: 5m or 1h.")]

AutoCacheMinMessagesOption = Annotated[
    int, typer.Option(help="Fewest messages for automatic checkpoints.")
]

CacheSampledOption = Annotated[
    bool, typer.Option(help="Also cache sampled requests (temperature > 0 without seed).")
]

RequestTimeoutOption = Annotated[
    float,
    typer.Option(help="Seconds one chat request may take before a 504 (0: no limit)."),
]

ShutdownTimeoutOption = Annotated[
    int,
    typer.Option(help="Seconds SIGTERM waits for requests in flight before exiting."),
]

AccessLogOption = Annotated[bool, typer.Option(help="Log every request (slower).")]

PricesOption = Annotated[
    Path | None,
    typer.Option(help="TOML price table for cost accounting, merged over the built-in one."),
]

ModelAliasOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Answer model NAME with the served model: NAME=SERVED (repeatable; "
        "*=SERVED answers every name; also PROMPTCACHE_MODEL_ALIASES=a=X,b=Y)."
    ),
]

ModelAliasFileOption = Annotated[
    Path | None,
    typer.Option(help='TOML or JSON file: {"aliases": {"NAME": "SERVED", ...}}.'),
]

WarmOption = Annotated[
    Path | None,
    typer.Option(
        help='JSON lines, one POST /v1/cache/prefixes body a line (+ "api_key": its '
        "tenant): prefilled and pinned before the server listens; a bad line stops the start."
    ),
]

__all__ = [
    "AccessLogOption",
    "AdminEndpointsOption",
    "AdminKeyOption",
    "ApiKeyOption",
    "AutoCacheMinMessagesOption",
    "AutoCacheOption",
    "AutoCacheTtlOption",
    "CacheSampledOption",
    "CacheTtlOption",
    "DecodePrecisionOption",
    "EngineWorkersOption",
    "HostOption",
    "KvCacheBytesOption",
    "KvDiskBytesOption",
    "KvDiskPathOption",
    "KvDtypeOption",
    "MaxBodyBytesOption",
    "MaxQueueOption",
    "MetricsKeyOption",
    "MinCacheTokensOption",
    "ModelAliasFileOption",
    "ModelAliasOption",
    "ModelOption",
    "PortOption",
    "PrefillPrecisionOption",
    "PricesOption",
    "ReplicaHealthIntervalOption",
    "ReplicaLoadFactorOption",
    "ReplicaMinLoadOption",
    "RequestTimeoutOption",
    "ShutdownTimeoutOption",
    "StoreOption",
    "TenantSecretOption",
    "UnsupportedModelBehaviorOption",
    "UpstreamApiKeyOption",
    "UpstreamConnectTimeoutOption",
    "UpstreamDialectOption",
    "UpstreamKeyModeOption",
    "UpstreamMaxRetriesOption",
    "UpstreamModelOption",
    "UpstreamModelsRefreshOption",
    "UpstreamProviderOption",
    "UpstreamReadTimeoutOption",
    "UpstreamUrlsOption",
    "WarmOption",
]
