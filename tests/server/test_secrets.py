"""No configured secret appears in anything the server or the CLI shows.

One server is configured with every kind of secret it takes: a Redis store URL
with a password (a real ``redis-server --requirepass``), an upstream API key and
an upstream URL with a password, tenant API keys, an admin key and a metrics key.
Every endpoint is then called, successfully and not (bad keys, upstream errors
that quote the key, a Redis outage, unknown routes), and every response body and
header, every log record and the start-up banner are searched for each secret.
Each search is paired with a check that the text searched is the one that would
have held the secret (the redacted URL is there, the warning was logged), so an
empty capture cannot pass for a clean one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rich.console import Console
from typer.testing import CliRunner

from promptcache.cli import app as cli_app
from promptcache.cli import serve as serve_module
from promptcache.cost.ledger import CostLedger
from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.server.cost_observer import CostObserver, register_ledger_metrics
from promptcache.store import open_store

REDIS_PASSWORD = "redis-pw-Zq81vT"
UPSTREAM_KEY = "sk-upstream-Uu7bN2"
UPSTREAM_URL_PASSWORD = "url-pw-Rr5mK3"
TENANT_KEYS = ("tenant-key-Ah3", "tenant-key-Bh4")
ADMIN_KEY = "admin-key-Xk9w"
METRICS_KEY = "metrics-key-Pp2q"
SECRETS = (
    REDIS_PASSWORD,
    UPSTREAM_KEY,
    UPSTREAM_URL_PASSWORD,
    *TENANT_KEYS,
    ADMIN_KEY,
    METRICS_KEY,
)

MODEL = "up-model"
KEY_ECHO_MODEL = "key-echo-model"
"""The mock upstream refuses this model with a 401 that quotes the key it was sent."""
DOWN_MODEL = "down-model"
"""The mock upstream's transport fails for this model with an error naming the key."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PasswordRedis:
    """A private ``redis-server --requirepass`` on 127.0.0.1."""

    def __init__(self, binary: str, directory: Path, password: str) -> None:
        self.port = _free_port()
        self.url = f"redis://:{password}@127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--requirepass", password,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client: redis.Redis[bytes] = redis.Redis.from_url(self.url, socket_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[PasswordRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = PasswordRedis(binary, tmp_path, REDIS_PASSWORD)
    try:
        yield server
    finally:
        server.kill()


def _upstream(request: httpx.Request) -> httpx.Response:
    """An OpenAI-compatible provider that, when it refuses, quotes what it was sent."""
    sent_key = request.headers.get("authorization", "").removeprefix("Bearer ")
    if request.url.userinfo:
        return httpx.Response(500, json={"error": {"message": f"userinfo in {request.url}"}})
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"object": "list", "data": [{"id": MODEL}]})
    body = request.read().decode()
    if KEY_ECHO_MODEL in body:
        message = f"Incorrect API key provided: {sent_key}. Find your key at the dashboard."
        return httpx.Response(401, json={"error": {"message": message, "type": "auth"}})
    if DOWN_MODEL in body:
        raise httpx.ConnectError(f"connection reset while sending key {sent_key}", request=request)
    if '"stream":true' in body.replace(" ", ""):
        frames = [
            '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model",'
            '"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},'
            '"finish_reason":null}]}',
            '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"up-model",'
            '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
            '"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}',
        ]
        content = "".join(f"data: {frame}\n\n" for frame in frames) + "data: [DONE]\n\n"
        return httpx.Response(200, text=content, headers={"content-type": "text/event-stream"})
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
    )


def _chat(model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}],
        **extra,
    }


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _transcript(response: httpx.Response) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    request = response.request
    return f"{request.method} {request.url} -> {response.status_code}\n{headers}\n{response.text}"


def _assert_no_secret(text: str, where: str) -> None:
    # Also with whitespace removed: a wrapped line must not hide a secret split in two.
    squeezed = "".join(text.split())
    for secret in SECRETS:
        assert secret not in text, f"{where} shows the secret {secret!r}:\n{text}"
        assert secret not in squeezed, f"{where} shows the secret {secret!r} wrapped:\n{text}"


async def _exercise(client: httpx.AsyncClient, redis_server: PasswordRedis) -> list[httpx.Response]:
    tenant, other, admin = _bearer(TENANT_KEYS[0]), _bearer(TENANT_KEYS[1]), _bearer(ADMIN_KEY)
    anthropic = {"anthropic-version": "2023-06-01"}
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", "/healthz", {}, None),
        ("GET", "/readyz", {}, None),  # the readiness probe names the store it checks
        ("GET", "/v1/models", {}, None),
        ("GET", "/v1/models", tenant, None),
        ("GET", "/v1/models", {"x-api-key": TENANT_KEYS[1], **anthropic}, None),
        ("GET", "/v1/models", _bearer("wrong-key"), None),
        ("POST", "/v1/chat/completions", {}, _chat()),
        ("POST", "/v1/chat/completions", _bearer("wrong-key"), _chat()),
        ("POST", "/v1/messages", {"x-api-key": "wrong-key", **anthropic}, _chat()),
        ("POST", "/v1/chat/completions", tenant, _chat()),
        ("POST", "/v1/chat/completions", tenant, _chat()),  # a HIT
        ("POST", "/v1/chat/completions", other, _chat(stream=True)),
        ("POST", "/v1/messages", {"x-api-key": TENANT_KEYS[0], **anthropic}, _chat()),
        ("POST", "/v1/chat/completions", tenant, _chat(KEY_ECHO_MODEL)),
        ("POST", "/v1/chat/completions", tenant, _chat(KEY_ECHO_MODEL, stream=True)),
        ("POST", "/v1/messages", {"x-api-key": TENANT_KEYS[0], **anthropic}, _chat(DOWN_MODEL)),
        ("POST", "/v1/chat/completions", tenant, _chat(DOWN_MODEL, stream=True)),
        ("POST", "/v1/chat/completions", tenant, {"model": MODEL}),
        ("POST", "/v1/chat/completions", tenant, _chat("no-such-model")),
        ("GET", "/v1/cache/stats", {}, None),
        ("GET", "/v1/cache/stats", tenant, None),
        ("GET", "/v1/cache/stats", admin, None),
        ("GET", "/metrics", {}, None),
        ("GET", "/metrics", tenant, None),
        ("GET", "/metrics", _bearer(METRICS_KEY), None),
        ("DELETE", "/v1/cache", tenant, None),
        ("GET", "/no/such/route", tenant, None),
        ("PUT", "/v1/chat/completions", tenant, None),
    ]
    responses = [
        await client.request(method, path, headers=headers, json=body)
        for method, path, headers, body in calls
    ]
    responses.append(
        await client.post(
            "/v1/chat/completions",
            headers={**tenant, "content-type": "application/json"},
            content=b'{"model": ',
        )
    )
    # Redis goes away: lookups become misses and the store logs its warning.
    redis_server.kill()
    responses.append(
        await client.post("/v1/chat/completions", headers=tenant, json=_chat(temperature=0))
    )
    responses.append(await client.get("/v1/cache/stats", headers=admin))
    responses.append(await client.get("/v1/cache/stats", headers=tenant))
    responses.append(await client.delete("/v1/cache", headers=admin))
    responses.append(await client.get("/metrics", headers=_bearer(METRICS_KEY)))
    return responses


def test_no_endpoint_or_log_line_shows_a_secret(
    password_redis: PasswordRedis, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = UpstreamEngine(
        UpstreamConfig(
            base_url="https://upstream.test/v1",
            api_key=UPSTREAM_KEY,
            dialect="openai",
            models=[MODEL, KEY_ECHO_MODEL, DOWN_MODEL],
        ),
        transport=httpx.MockTransport(_upstream),
    )
    config = ServerConfig(
        api_keys=TENANT_KEYS,
        admin_keys=(ADMIN_KEY,),
        metrics_key=METRICS_KEY,
        model_supports_caching=False,
    )
    cache = ResponseCache(open_store(password_redis.url + "?socket_timeout=0.2"))
    ledger = CostLedger()
    server = create_app(
        config,
        engine=upstream,
        cache=cache,
        observers=[CostObserver(ledger)],
        stats_sections={"costs": ledger.snapshot},
    )
    register_ledger_metrics(ledger, server.state.metrics.registry)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=server)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await _exercise(client, password_redis)
        finally:
            await upstream.aclose()

    with caplog.at_level(logging.DEBUG):
        responses = asyncio.run(run())
    cache.store.close()

    by_call = {(r.request.method, r.request.url.path, r.status_code) for r in responses}
    # The calls did what they should, so their output is the output worth searching.
    assert ("POST", "/v1/chat/completions", 200) in by_call
    assert ("POST", "/v1/chat/completions", 401) in by_call  # bad key, and the upstream's 401
    assert ("POST", "/v1/messages", 502) in by_call  # the upstream could not be reached
    assert ("GET", "/metrics", 401) in by_call and ("GET", "/metrics", 200) in by_call
    assert ("DELETE", "/v1/cache", 200) in by_call
    stats = [
        r.json() for r in responses if r.request.url.path == "/v1/cache/stats" and r.is_success
    ]
    shown_url = f"redis://:***@127.0.0.1:{password_redis.port}/0?socket_timeout=0.2"
    assert stats and all(body["response_cache"]["url"] == shown_url for body in stats)
    echoed = next(r for r in responses if KEY_ECHO_MODEL in r.request.content.decode())
    assert echoed.status_code == 401 and "Incorrect API key provided: ***" in echoed.text

    for response in responses:
        _assert_no_secret(
            _transcript(response), f"{response.request.method} {response.request.url}"
        )
    log = "\n".join(f"{r.name}: {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert f"Redis at {shown_url} unavailable" in log
    _assert_no_secret(log, "the log")


def test_banner_startup_errors_and_cli_output_show_no_secret(
    password_redis: PasswordRedis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    served: dict[str, Any] = {}

    def run(server: Any) -> None:
        served["config"] = server.config.app.state.config
        served["reprs"] = [
            repr(server.config.app.state.config),
            repr(server.config.app.state.engine.config),
            repr(server.config.app.state.cache.store),
            repr(server.config.app.state.cache.store.config),
        ]
        server._banner()

    monkeypatch.setattr(serve_module._Server, "run", run)
    # Wide consoles, so that no line is wrapped inside the URLs the asserts look for.
    monkeypatch.setattr(serve_module, "console", Console(stderr=True, width=500))
    monkeypatch.setenv("COLUMNS", "500")
    monkeypatch.setenv("PROMPTCACHE_UPSTREAM_API_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("PROMPTCACHE_METRICS_KEY", METRICS_KEY)
    runner = CliRunner()
    with caplog.at_level(logging.DEBUG):
        started = runner.invoke(
            cli_app,
            [
                "serve",
                "--host", "0.0.0.0",
                "--store", password_redis.url,
                "--upstream-url", f"https://acct:{UPSTREAM_URL_PASSWORD}@upstream.test/v1",
                "--upstream-model", MODEL,
                "--api-key", TENANT_KEYS[0],
                "--api-key", TENANT_KEYS[1],
                "--admin-key", ADMIN_KEY,
            ],
        )  # fmt: skip
        bad_store = runner.invoke(
            cli_app,
            ["serve", "--store", f"sqlite:///{tmp_path}/x.db?password={REDIS_PASSWORD}&ttl=1h"],
        )
        bad_upstream = runner.invoke(
            cli_app,
            [
                "serve",
                "--store",
                "memory://",
                "--upstream-url",
                f"ftp://u:{UPSTREAM_URL_PASSWORD}@h",
            ],
        )
        stats = runner.invoke(cli_app, ["stats", "--store", password_redis.url])
        cleared = runner.invoke(cli_app, ["clear", "--store", password_redis.url])

    assert started.exit_code == 0, started.output
    assert served["config"].metrics_key == METRICS_KEY  # the secrets did reach the server
    assert f"redis://:***@127.0.0.1:{password_redis.port}/0" in started.output
    assert "https://acct:***@upstream.test/v1" in started.output
    assert "metrics: key required" in started.output
    assert "cache clearing: admin key required" in started.output
    assert bad_store.exit_code == 2 and "password=***" in bad_store.output
    assert bad_upstream.exit_code == 2 and "ftp://u:***@h" in bad_upstream.output
    assert stats.exit_code == 0 and "redis://:***@" in stats.output
    assert cleared.exit_code == 0 and "redis://:***@" in cleared.output
    outputs = {
        "the banner": started.output,
        "a store error": bad_store.output,
        "an upstream error": bad_upstream.output,
        "promptcache stats": stats.output,
        "promptcache clear": cleared.output,
        "a config repr": "\n".join(served["reprs"]),
        "the log": "\n".join(r.getMessage() for r in caplog.records),
    }
    for where, text in outputs.items():
        _assert_no_secret(text, where)


async def test_upstream_url_credentials_stay_out_of_urls_logs_and_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _upstream(request)

    engine = UpstreamEngine(
        UpstreamConfig(
            base_url=f"https://acct:{UPSTREAM_URL_PASSWORD}@upstream.test/v1",
            dialect="openai",
            models=[MODEL, KEY_ECHO_MODEL],
        ),
        transport=httpx.MockTransport(upstream),
    )
    server = create_app(ServerConfig(model_supports_caching=False), engine=engine, cache=None)
    transport = httpx.ASGITransport(app=server)
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answered = await client.post("/v1/chat/completions", json=_chat())
            refused = await client.post("/v1/chat/completions", json=_chat(KEY_ECHO_MODEL))
        await engine.aclose()
    assert answered.status_code == 200, answered.text
    # The credentials still reach the upstream, as the Basic auth they always were...
    assert seen and all(
        request.headers["authorization"]
        == httpx.BasicAuth("acct", UPSTREAM_URL_PASSWORD)
        .sync_auth_flow(request)
        .__next__()
        .headers["authorization"]
        for request in seen
    )
    # ...but not in the request URL, which httpx logs, nor quoted back in an error.
    assert all(not request.url.userinfo for request in seen)
    assert refused.status_code == 401 and "Incorrect API key provided: Basic ***" in refused.text
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "https://upstream.test/v1/chat/completions" in log
    for response in (answered, refused):
        _assert_no_secret(_transcript(response), f"{response.request.url}")
    _assert_no_secret(log, "the log")


async def test_upstream_errors_are_scrubbed_of_extra_header_secrets() -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        quoted = request.headers["x-gateway-token"]
        return httpx.Response(403, json={"error": {"message": f"gateway token {quoted} revoked"}})

    config = UpstreamConfig(
        base_url="https://upstream.test/v1",
        api_key=UPSTREAM_KEY,
        models=[MODEL],
        extra_headers={"x-gateway-token": METRICS_KEY, "x-team": "blue"},
    )
    engine = UpstreamEngine(config, transport=httpx.MockTransport(upstream))
    server = create_app(ServerConfig(model_supports_caching=False), engine=engine, cache=None)
    transport = httpx.ASGITransport(app=server)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        refused = await client.post("/v1/chat/completions", json=_chat())
    await engine.aclose()
    assert refused.status_code == 403 and "gateway token *** revoked" in refused.text
    assert "blue" not in repr(config) and METRICS_KEY not in repr(config)
    assert UPSTREAM_KEY not in repr(config) and "upstream.test" in repr(config)
    _assert_no_secret(_transcript(refused), "the upstream's 403")
