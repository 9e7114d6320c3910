"""Replicas on loopback: three ``promptcache serve`` processes on the embedded model behind
one ``promptcache serve --upstream-url ... x3`` gateway, called with the OpenAI SDK.

Repeated long prefixes land on one replica, which reports cached tokens; a replica
killed mid-run is skipped and the requests still succeed (and stay together on the
next replica of the ring); the gateway's ``/v1/cache/stats`` and ``/metrics`` show it.
With no replica reachable the gateway answers 503 in each client's dialect.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
from promptcache.engine.upstream.replicas import ReplicaConfig, ReplicaEngine
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from tests.server.live import live_server

MODEL = "SmolLM2-135M-Instruct"
MANUAL = " ".join(
    f"Section {i}: the valve on line {i} is opened only after the pressure gauge reads "
    f"between {i} and {i + 3} bar, and it is closed again before the pump stops."
    for i in range(14)
)  # about 550 tokens (2.2 KB): past the replicas' --min-cache-tokens, two routing blocks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(port: int, cwd: Path, *options: str) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "promptcache"), "serve",
        "--host", "127.0.0.1", "--port", str(port), "--store", "none", *options,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ready(process: subprocess.Popen[bytes], port: int, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"promptcache serve exited: {error[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"promptcache serve on {port} was not ready in {seconds} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Three local-engine replicas and a gateway in front of them (all on 127.0.0.1)."""
    ports = [_free_port() for _ in range(3)]
    replicas = [_serve(p, tmp_path, "--min-cache-tokens", "32") for p in ports]
    gateway_port = _free_port()
    gateway: subprocess.Popen[bytes] | None = None
    try:
        for process, port in zip(replicas, ports, strict=True):
            _wait_ready(process, port, seconds=240)  # a loaded 2-core runner is slow
        urls = [arg for p in ports for arg in ("--upstream-url", f"http://127.0.0.1:{p}/v1")]
        gateway = _serve(gateway_port, tmp_path, *urls, "--replica-health-interval", "0.5")
        _wait_ready(gateway, gateway_port, seconds=30)
        yield {
            "base": f"http://127.0.0.1:{gateway_port}",
            "replicas": dict(zip([f"127.0.0.1:{p}" for p in ports], replicas, strict=True)),
        }
    finally:
        for process in [*replicas, *([gateway] if gateway else [])]:
            _stop(process)


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

    fleet["replicas"][first].kill()  # no goodbye: connections refused from now on
    fleet["replicas"][first].wait(timeout=10)
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


def _dead_gateway() -> Any:
    urls = [f"http://127.0.0.1:{_free_port()}/v1" for _ in range(2)]  # nothing listens
    engine = ReplicaEngine(
        [(url, UpstreamEngine(UpstreamConfig(base_url=url))) for url in urls],
        ReplicaConfig(health_interval=0),
    )
    return create_app(ServerConfig(), engine=engine, cache=None), urls


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
