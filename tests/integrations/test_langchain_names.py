"""LangChain's own cache names (``InMemoryCache``, ``SQLiteCache``, ``RedisCache``) over our stores.

The seed code ``set_llm_cache(SQLiteCache(database_path=...))`` switches to
promptcache by changing one import: same arguments, same behaviour through a real
LangChain chat model (``FakeListChatModel``: a hit leaves its next response unused),
plus ttl, byte caps, and a LangChain-format SQLite file refused and left intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_community import cache as community_cache
from langchain_core import caches as core_caches
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.outputs import ChatGeneration, Generation

from promptcache.errors import StoreError
from promptcache.integrations.langchain import (
    InMemoryCache,
    PromptCacheLangChainCache,
    RedisCache,
    SQLiteCache,
    import_langchain_sqlite,
    is_langchain_sqlite,
)

redis = pytest.importorskip("redis")

Factory = Callable[..., PromptCacheLangChainCache]
EXPIRY_DEADLINE = 10.0
"""Seconds an entry with a 0.5 s ttl may take to be reported gone (a loaded runner)."""


@pytest.fixture
def restore_global_cache() -> Iterator[None]:
    previous = get_llm_cache()
    yield
    set_llm_cache(previous)


@pytest.fixture(params=["InMemoryCache", "SQLiteCache", "RedisCache(client)", "RedisCache(url)"])
def make_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Builds the parametrised class with LangChain's arguments plus any extra keywords."""
    made: list[PromptCacheLangChainCache] = []
    kind: str = request.param
    redis_url = request.getfixturevalue("redis_server") if kind.startswith("Redis") else ""

    def make(**extra: Any) -> PromptCacheLangChainCache:
        cache: PromptCacheLangChainCache
        if kind == "InMemoryCache":
            cache = InMemoryCache(**extra)
        elif kind == "SQLiteCache":
            cache = SQLiteCache(database_path=str(tmp_path / f"lc{len(made)}.db"), **extra)
        elif kind == "RedisCache(client)":
            cache = RedisCache(redis.Redis.from_url(redis_url), **extra)
        else:
            cache = RedisCache(redis_url, **extra)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


def test_second_identical_invoke_is_served_from_the_cache(
    make_cache: Factory, restore_global_cache: None
) -> None:
    set_llm_cache(make_cache())
    model = FakeListChatModel(responses=["Paris", "not from the cache"])
    first = model.invoke("What is the capital of France?")
    second = model.invoke("What is the capital of France?")
    assert first.content == second.content == "Paris"
    assert model.i == 1  # the model's next response was not consumed
    assert model.invoke("Something else").content == "not from the cache"


async def test_async_invoke_is_served_from_the_cache(
    make_cache: Factory, restore_global_cache: None
) -> None:
    set_llm_cache(make_cache())
    model = FakeListChatModel(responses=["one", "two"])
    assert (await model.ainvoke("hi")).content == "one"
    assert (await model.ainvoke("hi")).content == "one"
    assert model.i == 1


def test_clear_and_aclear_empty_the_cache(make_cache: Factory) -> None:
    cache = make_cache()
    value = [ChatGeneration(message=FakeListChatModel(responses=["x"]).invoke("q"))]
    cache.update("p", "llm", value)
    assert cache.lookup("p", "llm") == value
    cache.clear()
    assert cache.lookup("p", "llm") is None

    async def round_trip() -> None:
        await cache.aupdate("p", "llm", value)
        assert await cache.alookup("p", "llm") == value
        await cache.aclear()
        assert await cache.alookup("p", "llm") is None

    asyncio.run(round_trip())


def test_entries_expire_after_ttl(make_cache: Factory, restore_global_cache: None) -> None:
    cache = make_cache(ttl=0.5)
    cache.update("p", "llm", [Generation(text="soon gone")])
    assert cache.lookup("p", "llm") == [Generation(text="soon gone")]
    deadline = time.monotonic() + EXPIRY_DEADLINE
    while cache.lookup("p", "llm") is not None:
        assert time.monotonic() < deadline, "the entry outlived its ttl"
        time.sleep(0.1)
    # And through a model: an expired answer is asked for again.
    set_llm_cache(cache)
    model = FakeListChatModel(responses=["first", "second"])
    assert model.invoke("q").content == "first"
    while model.invoke("q").content == "first":
        assert time.monotonic() < deadline + EXPIRY_DEADLINE, "the entry outlived its ttl"
        time.sleep(0.1)  # each hit answers "first" again; the call after expiry, "second"


# -- LangChain's constructor signatures ----------------------------------------------

SIGNATURES = [
    pytest.param(InMemoryCache, core_caches.InMemoryCache, id="InMemoryCache"),
    pytest.param(SQLiteCache, community_cache.SQLiteCache, id="SQLiteCache"),
    pytest.param(RedisCache, community_cache.RedisCache, id="RedisCache"),
]


@pytest.mark.parametrize(("ours", "theirs"), SIGNATURES)
def test_constructor_takes_langchains_arguments_the_same_way(ours: type, theirs: type) -> None:
    our_params = inspect.signature(ours).parameters
    their_params = inspect.signature(theirs).parameters
    assert list(our_params)[: len(their_params)] == list(their_params)
    for name, theirs_param in their_params.items():
        assert our_params[name].kind == theirs_param.kind, name
        assert our_params[name].default == theirs_param.default, name
    extras = [p for name, p in our_params.items() if name not in their_params]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extras)
    assert all(p.default is not inspect.Parameter.empty for p in extras)


def test_constructor_calls_as_langchain_spells_them(redis_server: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_server)
    for cache in (
        InMemoryCache(),
        InMemoryCache(maxsize=3),
        SQLiteCache(str(tmp_path / "positional.db")),
        SQLiteCache(database_path=str(tmp_path / "keyword.db")),
        RedisCache(client),
        RedisCache(client, ttl=60),
        RedisCache(redis_=client, ttl=60),
    ):
        cache.update("p", "llm", [Generation(text="ok")])
        assert cache.lookup("p", "llm") == [Generation(text="ok")]
        cache.close()
    for call in (
        lambda: InMemoryCache(3),  # type: ignore[call-arg]
        lambda: RedisCache(client, 60),  # type: ignore[call-arg]
    ):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError, match="maxsize must be greater than 0"):
        InMemoryCache(maxsize=0)
    with pytest.raises(ValueError, match=r"redis\.Redis"):
        RedisCache(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="redis://"):
        RedisCache("memory://")


def test_sqlite_default_path_is_langchains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    SQLiteCache().close()
    assert (tmp_path / ".langchain.db").is_file()


def test_sqlite_memory_path_is_an_in_process_cache() -> None:
    cache = SQLiteCache(database_path=":memory:")
    cache.update("p", "llm", [Generation(text="ok")])
    assert cache.lookup("p", "llm") == [Generation(text="ok")]
    assert not Path(":memory:").exists()


# -- maxsize and byte caps --------------------------------------------------------------


def _fill(cache: Any, *prompts: str) -> None:
    for prompt in prompts:
        cache.update(prompt, "llm", [Generation(text=prompt)])


def _present(cache: Any, *prompts: str) -> list[str]:
    return [p for p in prompts if cache.lookup(p, "llm") is not None]


def test_maxsize_evicts_the_oldest_entry_like_langchain() -> None:
    ours, theirs = InMemoryCache(maxsize=2), core_caches.InMemoryCache(maxsize=2)
    for cache in (ours, theirs):
        _fill(cache, "a", "b", "c")
    assert _present(ours, "a", "b", "c") == _present(theirs, "a", "b", "c") == ["b", "c"]
    _fill(ours, "d")
    assert _present(ours, "b", "c", "d") == ["c", "d"]


def test_maxsize_counts_a_hit_as_a_use_unlike_langchain() -> None:
    # The documented difference: ours is least recently used, LangChain's first written.
    ours, theirs = InMemoryCache(maxsize=2), core_caches.InMemoryCache(maxsize=2)
    for cache in (ours, theirs):
        _fill(cache, "a", "b")
        assert cache.lookup("a", "llm") is not None
        _fill(cache, "c")
    assert _present(ours, "a", "b", "c") == ["a", "c"]
    assert _present(theirs, "a", "b", "c") == ["b", "c"]


@pytest.mark.parametrize("kind", ["InMemoryCache", "SQLiteCache"])
def test_max_bytes_caps_the_stored_bytes(kind: str, tmp_path: Path) -> None:
    def make(max_bytes: int | None) -> PromptCacheLangChainCache:
        if kind == "InMemoryCache":
            return InMemoryCache(max_bytes=max_bytes)
        return SQLiteCache(str(tmp_path / f"{max_bytes}.db"), max_bytes=max_bytes)

    probe = make(None)
    _fill(probe, "a")
    one_entry = probe.store.stats().bytes
    cache = make(one_entry * 2 + one_entry // 2)  # room for two entries, not three
    _fill(cache, "a", "b", "c")
    assert _present(cache, "a", "b", "c") == ["b", "c"]
    assert cache.store.stats().evictions == 1


# -- a LangChain-format SQLite file -----------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# LangChain's own SQLiteCache.lookup warns about loads()' allowed_objects default.
LANGCHAINS_LOADS_WARNING = "ignore:The default value of `allowed_objects`"


@pytest.mark.filterwarnings(LANGCHAINS_LOADS_WARNING)
def test_langchain_sqlite_file_is_refused_and_left_intact(tmp_path: Path) -> None:
    path = tmp_path / ".langchain.db"
    theirs = community_cache.SQLiteCache(database_path=str(path))
    cached = [Generation(text="LangChain's answer"), Generation(text="and a second one")]
    theirs.update("prompt", "llm", cached)
    theirs.engine.dispose()
    before = _sha256(path)
    files_before = sorted(p.name for p in tmp_path.iterdir())

    assert is_langchain_sqlite(path)
    with pytest.raises(StoreError) as refused:
        SQLiteCache(database_path=str(path))
    message = str(refused.value)
    assert "LangChain SQLiteCache database" in message
    assert "another database_path" in message and "import_langchain_sqlite" in message

    assert _sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # no -wal/-shm either
    assert community_cache.SQLiteCache(database_path=str(path)).lookup("prompt", "llm") == cached


def test_langchain_entries_can_be_copied_to_another_path(tmp_path: Path) -> None:
    path = tmp_path / ".langchain.db"
    theirs = community_cache.SQLiteCache(database_path=str(path))
    cached = [Generation(text="LangChain's answer"), Generation(text="and a second one")]
    theirs.update("prompt", "llm", cached)
    theirs.update("other", "llm", [Generation(text="another")])
    theirs.engine.dispose()
    before = _sha256(path)

    ours = SQLiteCache(database_path=str(tmp_path / ".langchain-promptcache.db"))
    assert import_langchain_sqlite(path, ours) == 2
    assert ours.lookup("prompt", "llm") == cached
    assert ours.lookup("other", "llm") == [Generation(text="another")]
    assert _sha256(path) == before
    assert not is_langchain_sqlite(tmp_path / ".langchain-promptcache.db")
    with pytest.raises(StoreError, match="not a LangChain SQLiteCache"):
        import_langchain_sqlite(tmp_path / ".langchain-promptcache.db", ours)
    ours.close()


# -- Redis specifics ----------------------------------------------------------------------


def test_redis_cache_uses_the_callers_client_and_clears_only_its_keys(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.set("someone-elses-key", b"kept")
    cache = RedisCache(client)
    cache.update("p", "llm", [Generation(text="ok")])
    assert client.keys("promptcache-langchain:*")  # written through that client's server
    cache.clear()  # LangChain's runs FLUSHDB; ours removes its own keys only
    assert cache.lookup("p", "llm") is None
    assert client.get("someone-elses-key") == b"kept"
    cache.close()
    assert client.ping()  # closing the cache leaves the caller's client usable


def test_redis_cache_takes_a_client_that_decodes_responses(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    cache = RedisCache(client, ttl=60)
    value = [ChatGeneration(message=FakeListChatModel(responses=["é ✓"]).invoke("q"))]
    cache.update("p", "llm", value)
    assert cache.lookup("p", "llm") == value
    cache.close()
    client.set("someone-elses-key", "text")
    assert client.get("someone-elses-key") == "text"  # the caller's client still decodes


def test_redis_url_prefix_wins_over_the_default(redis_server: str) -> None:
    cache = RedisCache(f"{redis_server}?prefix=mine:")
    cache.update("p", "llm", [Generation(text="ok")])
    assert redis.Redis.from_url(redis_server).keys("mine:*")
    cache.close()
