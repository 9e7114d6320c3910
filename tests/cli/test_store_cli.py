from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from promptcache.cli import app
from promptcache.store import open_store

runner = CliRunner()


def _filled_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/cache.db"
    with open_store(url) as store:
        for i in range(3):
            store.put(f"k{i}", b"x" * 100)
        store.get("k0")
        store.get("missing")
    return url


def test_stats_prints_a_table_of_the_store(tmp_path: Path) -> None:
    url = _filled_store(tmp_path)
    result = runner.invoke(app, ["stats", "--store", url])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in
             result.output.splitlines() if line.count("│") == 3}  # fmt: skip
    assert lines["entries"] == "3"
    assert lines["hits"] == "1"
    assert lines["misses"] == "1"
    assert lines["hit ratio"] == "50.0%"
    assert lines["evictions"] == "0"


def test_clear_removes_every_entry(tmp_path: Path) -> None:
    url = _filled_store(tmp_path)
    result = runner.invoke(app, ["clear", "--store", url])
    assert result.exit_code == 0, result.output
    assert "Removed 3 entries" in result.output
    with open_store(url) as store:
        assert store.stats().entries == 0


def test_store_url_from_the_environment(tmp_path: Path) -> None:
    url = _filled_store(tmp_path)
    result = runner.invoke(app, ["stats"], env={"PROMPTCACHE_STORE": url})
    assert result.exit_code == 0 and "entries" in result.output


def test_missing_store_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/none.db"
    for command in ("stats", "clear"):
        result = runner.invoke(app, [command, "--store", url])
        assert result.exit_code == 1
        assert "No response cache" in result.output
    assert not (tmp_path / "none.db").exists()


def test_bad_url_is_an_error_listing_valid_schemes() -> None:
    result = runner.invoke(app, ["stats", "--store", "ftp://x"])
    assert result.exit_code == 1
    assert "valid schemes" in result.output


def test_redis_store_stats(redis_server: str) -> None:
    with open_store(redis_server) as store:
        store.put("k", b"v")
    result = runner.invoke(app, ["stats", "--store", redis_server])
    assert result.exit_code == 0, result.output
    assert "entries" in result.output
