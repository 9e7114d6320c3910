"""A restarted server answers a long prefix it saw before the restart from its KV disk tier.

Two servers, one after the other, on one ``--kv-disk-path`` (the embedded model,
no response cache, so every request reaches the engine): the second one's first
request reports the prefix as ``cached_tokens`` through the OpenAI SDK, and its
``/v1/cache/stats`` and ``/metrics`` show the disk tier's hits and reads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.threaded import ThreadedEngine
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from tests.server.live import live_server

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"
SYSTEM = "\n".join(
    f"Rule {i}: parcels for zone {i % 9} leave depot {i % 4} at {i % 12 + 1} o'clock."
    for i in range(120)
)  # well over the default 1,024-token minimum


def serve_once(loaded: Any, directory: Path, question: str) -> tuple[Any, dict[str, Any], str]:
    """One server's life: a request, then its stats and metrics; then it stops."""
    config = LocalEngineConfig(prefix_cache=PrefixCacheConfig(disk_path=str(directory)))
    local = LocalEngine(config, loaded=loaded)
    engine = ThreadedEngine(local, max_queue=4, workers=1)
    app = create_app(ServerConfig(), engine=engine, cache=None)
    try:
        with live_server(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
            completion = client.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": question},
                ],
                max_tokens=2,
                temperature=0,
            )
            stats = httpx.get(f"{url}/v1/cache/stats").json()
            metrics = httpx.get(f"{url}/metrics").text
    finally:
        asyncio.run(engine.aclose())
        local.close()
    return completion.usage, stats, metrics


def test_a_restarted_server_reads_a_prefix_seen_before_from_disk(
    local_engine: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "kv"
    before, _, _ = serve_once(local_engine.loaded, directory, "Which depot serves zone 3?")
    assert before.prompt_tokens > 1024
    assert before.prompt_tokens_details.cached_tokens == 0
    after, stats, metrics = serve_once(local_engine.loaded, directory, "When does zone 5 leave?")
    assert after.prompt_tokens_details.cached_tokens >= 1024
    tiers = {tier["tier"]: tier for tier in stats["prefix_cache"]["tiers"]}
    assert tiers["disk"]["hits"] * 16 == after.prompt_tokens_details.cached_tokens
    assert tiers["ram"]["promotions"] == tiers["disk"]["hits"]
    assert tiers["disk"]["bytes_read"] > 0 and tiers["disk"]["read_bytes_per_second"] > 0
    assert tiers["disk"]["bytes_budget"] == 4 << 30
    assert f'promptcache_kv_tier_hits_total{{tier="disk"}} {float(tiers["disk"]["hits"])}' in (
        metrics
    )
    assert 'promptcache_kv_tier_bytes_used{tier="ram"}' in metrics
