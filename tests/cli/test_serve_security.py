"""``promptcache serve`` beyond loopback: no open admin endpoint, and the metrics key."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from promptcache.cli import app
from promptcache.cli import serve as serve_module


def serve(*options: str) -> Any:
    return CliRunner().invoke(app, ["serve", "--store", "memory://", *options])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "myhost.example"])
def test_beyond_loopback_without_an_admin_key_refuses_to_start(
    captured: dict[str, Any], host: str
) -> None:
    result = serve("--host", host)
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert f"--host {host} is reachable beyond this machine" in message
    for fix in ("--admin-key KEY", "PROMPTCACHE_ADMIN_KEYS", "--no-admin-endpoints"):
        assert fix in message
    assert "choice" not in captured  # refused before loading a model or opening a store
    assert "app" not in captured


def test_tenant_keys_alone_do_not_count_as_an_admin_key(captured: dict[str, Any]) -> None:
    result = serve("--host", "0.0.0.0", "--api-key", "tenant")
    assert result.exit_code == 2 and "--admin-key KEY" in result.output


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_keeps_serving_without_keys(captured: dict[str, Any], host: str) -> None:
    result = serve("--host", host)
    assert result.exit_code == 0, result.output
    assert captured["uvicorn"].host == host
    config = captured["app"].state.config
    assert config.admin_endpoints and config.admin_keys == ()
    assert "cache clearing: open (loopback only)" in result.output


def test_beyond_loopback_with_an_admin_key_starts(captured: dict[str, Any]) -> None:
    result = serve("--host", "0.0.0.0", "--admin-key", "boss")
    assert result.exit_code == 0, result.output
    assert captured["app"].state.config.admin_keys == ("boss",)
    assert "cache clearing: admin key required" in result.output


def test_beyond_loopback_with_an_admin_key_from_the_environment_starts(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTCACHE_ADMIN_KEYS", "boss-from-env")
    result = serve("--host", "0.0.0.0")
    assert result.exit_code == 0, result.output
    assert captured["app"].state.config.admin_keys == ("boss-from-env",)


def test_no_admin_endpoints_starts_beyond_loopback_with_clearing_off(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: dict[str, httpx.Response] = {}

    async def exercise(server: Any) -> None:
        transport = httpx.ASGITransport(app=server)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers["clear"] = await client.delete("/v1/cache")
            answers["chat"] = await client.post(
                "/v1/chat/completions",
                json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
            )

    def run(server: Any) -> None:
        # While "serving": serve closes the engine once run returns.
        captured["app"] = server.config.app
        server._banner()
        asyncio.run(exercise(server.config.app))

    monkeypatch.setattr(serve_module._Server, "run", run)
    result = serve("--host", "0.0.0.0", "--no-admin-endpoints")
    assert result.exit_code == 0, result.output
    assert "cache clearing: off (--no-admin-endpoints)" in result.output
    assert captured["app"].state.config.admin_endpoints is False
    assert answers["clear"].status_code == 403
    assert "--no-admin-endpoints" in answers["clear"].json()["error"]["message"]
    assert answers["chat"].status_code == 200  # only clearing is off


def test_metrics_key_from_the_option_and_the_environment(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from_option = serve("--metrics-key", "scrape-1")
    assert from_option.exit_code == 0, from_option.output
    assert captured["app"].state.config.metrics_key == "scrape-1"
    assert "metrics: key required" in from_option.output
    monkeypatch.setenv("PROMPTCACHE_METRICS_KEY", "scrape-2")
    from_env = serve()
    assert from_env.exit_code == 0, from_env.output
    assert captured["app"].state.config.metrics_key == "scrape-2"


def test_without_a_metrics_key_metrics_stay_open(captured: dict[str, Any]) -> None:
    result = serve()
    assert result.exit_code == 0, result.output
    assert captured["app"].state.config.metrics_key is None
    assert "metrics: open" in result.output


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.1.2.3", False),
        ("::ffff:10.0.0.1", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert serve_module.is_loopback(host) is loopback


def test_store_url_from_the_environment_keeps_its_password_off_the_command_line(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTCACHE_STORE", "memory://:s3cret@local?max_entries=7")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    store = captured["app"].state.cache.store
    assert store.config.max_entries == 7
    assert "memory://:***@local?max_entries=7" in result.output
    assert "s3cret" not in result.output
