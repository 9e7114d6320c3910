"""The KV disk tier from the command line: serve's options, ``clear --kv``, ``stats``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promptcache.cli import app
from promptcache.cli.stats import server_stats_tables
from promptcache.prefix import PrefixCache
from tests.prefix.helpers import make_cache, store


def filled_tier(directory: Path) -> PrefixCache:
    cache = make_cache(disk_path=str(directory), disk_bytes=1 << 20)
    store(cache, list(range(100, 132)))  # 8 blocks, written through to disk
    assert cache.disk is not None and cache.disk.wait_idle()
    return cache


def test_serve_turns_the_disk_tier_on_by_default(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "--store", "memory://"])
    assert result.exit_code == 0, result.output
    choice = captured["choice"]
    assert choice.kv_disk_path == ".promptcache/kv" and choice.kv_disk_bytes == 4 << 30


def test_serve_disk_tier_options(captured: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["serve", "--store", "memory://", "--kv-disk-path", str(tmp_path / "kv")]
    result = runner.invoke(app, [*args, "--kv-disk-bytes", "20GB"])
    assert result.exit_code == 0, result.output
    assert captured["choice"].kv_disk_path == str(tmp_path / "kv")
    assert captured["choice"].kv_disk_bytes == 20 << 30
    off = runner.invoke(app, ["serve", "--store", "memory://", "--kv-disk-bytes", "0"])
    assert off.exit_code == 0, off.output
    assert captured["choice"].kv_disk_bytes == 0


def test_serve_refuses_disk_options_for_an_upstream(captured: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--store",
            "memory://",
            "--upstream-url",
            "http://127.0.0.1:9/v1",
            "--kv-disk-bytes",
            "1GB",
        ],
    )
    assert result.exit_code == 2
    assert "--kv-disk-bytes" in result.output and "local engine" in result.output


def test_clear_kv_empties_the_disk_tier(tmp_path: Path) -> None:
    directory = tmp_path / "kv"
    cache = filled_tier(directory)
    runner = CliRunner()
    busy = runner.invoke(app, ["clear", "--kv", "--kv-disk-path", str(directory)])
    assert busy.exit_code == 1 and "in use by another promptcache process" in busy.output
    cache.close()
    result = runner.invoke(app, ["clear", "--kv", "--kv-disk-path", str(directory)])
    assert result.exit_code == 0, result.output
    assert "Removed 8 KV blocks" in result.output
    assert not list(directory.rglob("*.safetensors"))
    again = make_cache(disk_path=str(directory), disk_bytes=1 << 20)
    try:
        assert again.disk is not None and again.stats().tiers[1].blocks == 0
    finally:
        again.close()


def test_clear_kv_disk_path_needs_kv(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["clear", "--kv-disk-path", str(tmp_path)])
    assert result.exit_code == 2 and "--kv" in result.output


def test_stats_shows_a_disk_tier_directory(tmp_path: Path) -> None:
    directory = tmp_path / "kv"
    cache = filled_tier(directory)
    try:
        result = CliRunner().invoke(app, ["stats", "--kv-disk-path", str(directory)])
    finally:
        cache.close()
    assert result.exit_code == 0, result.output
    assert "KV disk tier" in result.output and "blocks" in result.output
    assert "model_id" in result.output and "tiny" in result.output
    missing = CliRunner().invoke(app, ["stats", "--kv-disk-path", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no KV disk tier" in missing.output


def test_server_stats_show_each_tier() -> None:
    body = {
        "prefix_cache": {
            "tiers": [
                {"tier": "ram", "bytes_used": 1024, "bytes_budget": 4096, "blocks": 2, "hits": 5},
                {
                    "tier": "disk",
                    "bytes_used": 2048,
                    "bytes_budget": 1 << 30,
                    "blocks": 4,
                    "promotions": 3,
                    "write_queue_drops": 7,
                    "read_bytes_per_second": 3 * 1024 * 1024,
                },
            ]
        }
    }
    tables = server_stats_tables(body, url="http://x")
    tiers = tables[-1]
    assert tiers.title is not None and "tiers" in tiers.title
    cells = {column.header: list(column.cells) for column in tiers.columns}
    assert cells["tier"] == ["ram", "disk"]
    assert cells["queue drops"] == ["0", "7"]
    assert cells["read bandwidth"] == ["-", "3.0 MiB/s"]
