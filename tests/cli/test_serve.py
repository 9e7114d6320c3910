"""``promptcache serve``: options become the right config, engine and store (no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promptcache.cli import app
from promptcache.cli import serve as serve_module


def test_serve_options_reach_the_app(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMPTCACHE_API_KEYS", "env-key-1, env-key-2")
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--port",
            "8123",
            "--api-key",
            "cli-key",
            "--admin-key",
            "boss",
            "--max-queue",
            "3",
            "--max-body-bytes",
            "1MB",
            "--kv-cache-bytes",
            "256MB",
            "--auto-cache",
            "--auto-cache-ttl",
            "1h",
        ],
    )
    assert result.exit_code == 0, result.output
    config = captured["app"].state.config
    assert config.api_keys == ("cli-key", "env-key-1", "env-key-2")
    assert config.admin_keys == ("boss",)
    assert config.max_body_bytes == 1024 * 1024
    assert config.auto_cache is not None and config.auto_cache.ttl == "1h"
    assert captured["choice"].kv_cache_bytes == 256 * 1024 * 1024
    assert captured["choice"].max_queue == 3
    assert captured["choice"].workers == 8  # a batch of 8 rows (DEFAULT_DECODE_BATCH)
    assert captured["uvicorn"].host == "127.0.0.1" and captured["uvicorn"].port == 8123
    # The default store is SQLite under ./.promptcache/.
    assert (tmp_path / ".promptcache" / "responses.db").exists()
    assert "http://127.0.0.1:8123" in result.output
    assert "/v1/chat/completions" in result.output


def test_serve_rejects_bad_options(captured: dict[str, Any]) -> None:
    runner = CliRunner()
    bad_dialect = runner.invoke(app, ["serve", "--store", "memory://", "--upstream-dialect", "x"])
    bad_ttl = runner.invoke(app, ["serve", "--store", "memory://", "--auto-cache-ttl", "2h"])
    bad_size = runner.invoke(app, ["serve", "--store", "memory://", "--max-body-bytes", "lots"])
    assert bad_dialect.exit_code != 0
    assert bad_ttl.exit_code == 2 and "5m or 1h" in bad_ttl.output
    assert bad_size.exit_code != 0


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("512MB", 512 * 1024**2), ("2g", 2 * 1024**3), ("1.5KiB", 1536)],
)
def test_parse_size(text: str, size: int) -> None:
    assert serve_module.parse_size(text) == size


def test_serve_deadlines_reach_the_app_and_uvicorn(captured: dict[str, Any]) -> None:
    runner = CliRunner()
    timed = runner.invoke(
        app,
        ["serve", "--store", "memory://", "--request-timeout", "42", "--shutdown-timeout", "7"],
    )
    assert captured["uvicorn"].timeout_graceful_shutdown == 7
    assert captured["app"].state.config.request_timeout == 42.0
    unlimited = runner.invoke(app, ["serve", "--store", "memory://", "--request-timeout", "0"])
    assert timed.exit_code == 0, timed.output
    assert unlimited.exit_code == 0, unlimited.output
    assert captured["app"].state.config.request_timeout is None
    default = runner.invoke(app, ["serve", "--store", "memory://"])
    assert default.exit_code == 0
    assert captured["app"].state.config.request_timeout == 600.0
