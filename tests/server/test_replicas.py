"""Replicas on loopback: three local-engine servers (uvicorn on 127.0.0.1, each with
its own KV prefix cache over the session's embedded model) behind one gateway app on a
:class:`ReplicaEngine` of upstream engines, called with the OpenAI SDK.

Repeated long prefixes land on one replica, which reports cached tokens; a replica
stopped mid-run is skipped and the requests still succeed (and stay together on the
next replica of the ring); the gateway's ``/v1/cache/stats`` and ``/metrics`` show it.
With no replica reachable the gateway answers 503 in each client's dialect.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import anthropic
import httpx
import openai
import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.threaded import ThreadedEngine
from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
from promptcache.engine.upstream.replicas import ReplicaConfig, ReplicaEngine
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from tests.server.live import live_server

MODEL = "SmolLM2-135M-Instruct"
MANUAL = " ".join(
    f"Section {i}: the valve on line {i} is opened only after the pressure gauge reads "
    f"between {i} and {i + 3} bar, and it is closed again before the pump stops."
    for i in range(14)
)  # about 550 tokens (2.2 KB): past the replicas' min_cache_tokens, two routing blocks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gateway(urls: list[str], **config: Any) -> Any:
    engine = ReplicaEngine(
        [(url, UpstreamEngine(UpstreamConfig(base_url=url))) for url in urls],
        ReplicaConfig(**config),
    )
    return create_app(ServerConfig(), engine=engine, cache=None)


@pytest.fixture
def fleet(local_engine: Any) -> Iterator[dict[str, Any]]:
    """Three replicas (their own KV caches, the session's model weights) and a gateway."""
    engines = [
        ThreadedEngine(
            LocalEngine(
                LocalEngineConfig(prefix_cache=PrefixCacheConfig(min_cache_tokens=32)),
                loaded=local_engine.loaded,
            ),
            max_queue=8,
            workers=1,
        )
        for _ in range(3)
    ]
    gateways: list[Any] = []
    try:
        with ExitStack() as stack:
            stops: dict[str, ExitStack] = {}
            urls = []
            for engine in engines:
                replica = stack.enter_context(ExitStack())
                base = replica.enter_context(
                    live_server(create_app(ServerConfig(), engine=engine, cache=None))
                )
                stops[base.removeprefix("http://")] = replica
                urls.append(f"{base}/v1")
            gateways.append(_gateway(urls, health_interval=0.5))
            yield {"base": stack.enter_context(live_server(gateways[0])), "stops": stops}
    finally:  # the servers have stopped: nothing is in flight
        for engine in [*(g.state.engine for g in gateways), *engines]:
            asyncio.run(engine.aclose())


def _ask(client: openai.OpenAI, question: str) -> int:
    """One question after the manual; the prompt tokens the replica read from its cache."""
    completion = client.chat.completions.create(
        model=MODEL,
        max_tokens=1,
        temperature=0,
        messages=[
            {"role": "system", "content": MANUAL},
            {"role": "user", "content": question},
        ],
    )
    assert completion.choices[0].message.content is not None
    details = completion.usage.prompt_tokens_details if completion.usage else None
    return (details.cached_tokens or 0) if details else 0


def _replica_rows(base: str) -> dict[str, dict[str, Any]]:
    stats = httpx.get(f"{base}/v1/cache/stats", timeout=10).json()
    return {row["replica"]: row for row in stats["engine"]["replicas"]["replicas"]}


def test_one_prefix_sticks_to_one_replica_and_a_killed_one_is_skipped(
    fleet: dict[str, Any],
) -> None:
    base = fleet["base"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
    cached = [_ask(client, f"Which line is question {i} about?") for i in range(4)]
    assert cached[0] == 0  # cold
    assert all(c > 400 for c in cached[1:]), cached  # the manual, read from the replica's KV

    rows = _replica_rows(base)
    used = [name for name, row in rows.items() if row["requests"]]
    assert len(used) == 1, rows  # every question reached the one replica
    first = used[0]
    assert rows[first]["requests"] == 4 and rows[first]["cached_share"] > 0.4

    fleet["stops"][first].close()  # the replica stops listening: connections refused
    cached = [_ask(client, f"After the failure, question {i}?") for i in range(3)]
    assert cached[0] == 0 and cached[2] > 400  # the next replica now holds the manual

    rows = _replica_rows(base)
    # Out, found by a probe or by the request that could not connect (then tried once).
    assert rows[first]["healthy"] is False and rows[first]["ejections"] >= 1
    assert rows[first]["requests"] - 4 == rows[first]["errors"] <= 1
    moved = [name for name, row in rows.items() if name != first and row["requests"]]
    assert len(moved) == 1 and rows[moved[0]]["requests"] == 3

    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert f'promptcache_replica_up{{replica="{first}"}} 0.0' in metrics
    assert f'promptcache_replica_requests_total{{replica="{moved[0]}"}} 3.0' in metrics
    assert 'promptcache_replica_cached_token_share{replica="' in metrics


def _dead_gateway() -> tuple[Any, list[str]]:
    urls = [f"http://127.0.0.1:{_free_port()}/v1" for _ in range(2)]  # nothing listens
    return _gateway(urls, health_interval=0), urls


def test_no_healthy_replica_is_a_503_in_each_dialect() -> None:
    app, urls = _dead_gateway()
    hosts = [url.split("//")[1].split("/")[0] for url in urls]
    try:
        with live_server(app) as base:
            oa = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.InternalServerError) as caught:
                oa.chat.completions.create(
                    model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
                )
            assert caught.value.status_code == 503
            message = str(caught.value)
            assert "No upstream replica is healthy" in message
            assert all(host in message for host in hosts)

            an = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0)
            with pytest.raises(anthropic.APIStatusError) as refused:
                an.messages.create(
                    model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
                )
            assert refused.value.status_code == 503
            body: Any = refused.value.body
            assert body["type"] == "error" and "No upstream replica" in body["error"]["message"]

            stats = httpx.get(f"{base}/v1/cache/stats").json()["engine"]["replicas"]
            assert stats["refused_none_healthy"] == 2
            assert [r["healthy"] for r in stats["replicas"]] == [False, False]
            metrics = httpx.get(f"{base}/metrics").text
            assert 'promptcache_replica_moved_total{reason="none_healthy"} 2.0' in metrics
    finally:
        asyncio.run(app.state.engine.aclose())
