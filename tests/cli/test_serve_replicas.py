"""``promptcache serve --upstream-url A --upstream-url B ...``: replicas of one model."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from promptcache.cli import app
from promptcache.cli._serve_setup import build_engine
from promptcache.engine.upstream import UpstreamEngine
from promptcache.engine.upstream.replicas import ReplicaEngine

URLS = ["http://10.1.0.1:8001/v1", "http://user:s3cret@10.1.0.2:8001/v1", "http://10.1.0.3:8001/v1"]


def _serve(*options: str) -> Any:
    urls = [arg for url in URLS for arg in ("--upstream-url", url)]
    return CliRunner().invoke(app, ["serve", "--store", "memory://", *urls, *options])


def test_repeated_upstream_urls_build_replicas_with_the_options(captured: dict[str, Any]) -> None:
    result = _serve("--replica-load-factor", "1.5", "--replica-health-interval", "0")
    assert result.exit_code == 0, result.output
    choice = captured["choice"]
    assert choice.upstream_urls == tuple(URLS) and choice.upstream_url == URLS[0]
    engine, text = build_engine(choice, Console(file=None, quiet=True))
    try:
        assert isinstance(engine, ReplicaEngine)
        assert engine.config.load_factor == 1.5 and engine.config.health_interval == 0
        labels = [r.label for r in engine.replicas]
        assert labels == ["10.1.0.1:8001", "10.1.0.2:8001", "10.1.0.3:8001"]
        # Each replica is the single-upstream engine on its own URL.
        assert all(isinstance(r.engine, UpstreamEngine) for r in engine.replicas)
        assert "3 upstream openai replicas" in text and "s3cret" not in text
    finally:
        asyncio.run(engine.aclose())


def test_replica_options_need_replicas_and_sane_values(captured: dict[str, Any]) -> None:
    runner = CliRunner()
    alone = runner.invoke(
        app,
        ["serve", "--store", "memory://", "--upstream-url", URLS[0], "--replica-load-factor", "2"],
    )
    assert alone.exit_code == 2 and "--replica-load-factor" in alone.output
    local = runner.invoke(app, ["serve", "--store", "memory://", "--replica-health-interval", "1"])
    assert local.exit_code == 2 and "--replica-health-interval" in local.output
    result = _serve("--replica-load-factor", "1.0")
    assert result.exit_code == 0, result.output  # parsed; refused when the engine is built
    choice = captured["choice"]
    try:
        build_engine(choice, Console(quiet=True))
    except ValueError as error:
        assert "load factor must be > 1" in str(error)
    else:
        raise AssertionError("a load factor of 1 was accepted")
