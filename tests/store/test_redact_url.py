"""``redact_url``: credentials out of every URL a store shows; the rest kept as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptcache.store import MemoryStore, open_store, redact_url
from promptcache.store.redis import RedisStore, RedisStoreConfig


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache.internal:6379/0", "redis://:***@cache.internal:6379/0"),
        ("rediss://app:s3cret@cache.internal/2?prefix=a:", "rediss://app:***@cache.internal/2?prefix=a:"),
        ("redis://:p@ss@host/0", "redis://:***@host/0"),  # the last "@" ends the user part
        ("redis://:p%40ss@host/0", "redis://:***@host/0"),
        ("rediss://u:pw@[::1]:6380/0", "rediss://u:***@[::1]:6380/0"),
        ("https://TOKEN@api.example.com/v1", "https://***@api.example.com/v1"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("https://h/v1?api_key=k&Access_Token=t&X-Amz-Signature=s", "https://h/v1?api_key=***&Access_Token=***&X-Amz-Signature=***"),
        ("https://h/v1?pass%77ord=s3cret", "https://h/v1?pass%77ord=***"),
        ("redis://h/0?password=s3cret#frag", "redis://h/0?password=***#frag"),
        ("redis://h/0?password=", "redis://h/0?password="),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:///.promptcache/responses.db?ttl=1h", "sqlite:///.promptcache/responses.db?ttl=1h"),
        ("memory://?max_entries=5", "memory://?max_entries=5"),
        ("sqlite:///dir@2024/cache.db", "sqlite:///dir@2024/cache.db"),  # "@" in a path
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # redacting twice changes nothing


def test_every_store_shows_its_url_redacted(tmp_path: Path) -> None:
    memory = MemoryStore(url="memory://:s3cret@x")
    assert memory.url == memory.stats().url == "memory://:***@x"
    with open_store(f"sqlite:///{tmp_path}/c.db?ttl=1h") as sqlite:
        assert sqlite.url == sqlite.stats().url == f"sqlite:///{tmp_path}/c.db?ttl=1h"
    redis_store = open_store("redis://:s3cret@127.0.0.1:1/0?socket_timeout=0.1")
    assert isinstance(redis_store, RedisStore)
    # The client still connects with the password; only what is shown hides it.
    assert redis_store.config.url == "redis://:s3cret@127.0.0.1:1/0"
    assert redis_store.url == "redis://:***@127.0.0.1:1/0?socket_timeout=0.1"
    assert redis_store.stats().url == redis_store.url  # Redis unreachable: still redacted
    assert "s3cret" not in repr(redis_store) + repr(redis_store.config)
    redis_store.close()


def test_url_errors_do_not_quote_the_password() -> None:
    with pytest.raises(ValueError) as unknown:
        open_store("sqlite:///x.db?password=s3cret")
    with pytest.raises(ValueError) as scheme:
        open_store("postgres://:s3cret@db/x")
    with pytest.raises(ValueError) as not_redis:
        RedisStoreConfig(url="http://:s3cret@h")
    for error in (unknown, scheme, not_redis):
        assert "s3cret" not in str(error.value) and "***" in str(error.value)
