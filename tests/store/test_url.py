from __future__ import annotations

from pathlib import Path

import pytest

from promptcache.store import MemoryStore, open_store, sqlite_path
from promptcache.store.redis import RedisStore
from promptcache.store.sqlite import SqliteStore


def test_memory_url_parameters() -> None:
    store = open_store("memory://?max_entries=5&max_bytes=2KB&ttl=5m")
    assert isinstance(store, MemoryStore)
    assert store.config.max_entries == 5
    assert store.config.max_bytes == 2048
    assert store.config.ttl == 300


def test_sqlite_relative_and_absolute_paths() -> None:
    assert sqlite_path("sqlite:///cache/responses.db") == Path("cache/responses.db")
    assert sqlite_path("sqlite:////tmp/x.db") == Path("/tmp/x.db")


def test_sqlite_url_opens_a_store(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/a/b.db?max_bytes=1MB&ttl=1h") as store:
        assert isinstance(store, SqliteStore)
        assert store.config.max_bytes == 1024**2
        assert store.config.ttl == 3600
    assert (tmp_path / "a" / "b.db").exists()


def test_sqlite_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    from promptcache.errors import StoreError

    with pytest.raises(StoreError, match="No response cache"):
        open_store(f"sqlite:///{tmp_path}/missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_redis_url_keeps_client_parameters_and_takes_ours() -> None:
    store = open_store("redis://127.0.0.1:1/3?prefix=app:&ttl=90s")
    assert isinstance(store, RedisStore)
    assert store.config.prefix == "app:"
    assert store.config.ttl == 90
    assert store.config.url == "redis://127.0.0.1:1/3"
    store.close()


def test_unknown_scheme_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"memory://.*sqlite:///.*redis://"):
        open_store("postgres://localhost/db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://?max_entrys=3", "unknown parameter.*max_entrys.*valid"),
        ("memory://?max_bytes=lots", "max_bytes='lots'"),
        ("memory://?ttl=5y", "ttl='5y'"),
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///:memory:", "memory://"),
    ],
)
def test_bad_urls_are_value_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url)
