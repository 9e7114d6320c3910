"""promptcache: exact response cache and real KV prefix cache for chat-model calls.

The public surface, importable from here::

    from promptcache import ResponseCache, open_store

    cache = ResponseCache(open_store("sqlite:///.promptcache/responses.db"))

``import promptcache`` needs nothing beyond the standard library. The names
whose modules need an extra (the LangChain cache, the Redis store, the engines
and their configs) are imported on first use (PEP 562), so using them without
their extra raises :class:`MissingExtraError` naming the ``pip install`` that
fixes it, and never costs the core path a torch or fastapi import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from promptcache._extras import MissingExtraError, needs_extra
from promptcache.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PromptCacheError,
    RequestError,
    StoreError,
    UpstreamError,
)
from promptcache.keys import langchain_key, response_key
from promptcache.request import (
    Breakpoint,
    CacheControl,
    ChatRequest,
    ImageBlock,
    Message,
    SamplingParams,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    Transport,
)
from promptcache.response_cache import CacheHit, ResponseCache
from promptcache.result import Choice, Result, TextDelta, Usage
from promptcache.store import (
    MemoryStore,
    MemoryStoreConfig,
    ResponseStore,
    StoredEntry,
    StoreStats,
    open_store,
    redact_url,
)
from promptcache.store.sqlite import SqliteStore, SqliteStoreConfig

if TYPE_CHECKING:
    from promptcache.engine.local import LocalEngine, LocalEngineConfig
    from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
    from promptcache.integrations.langchain import PromptCacheLangChainCache
    from promptcache.prefix.config import PrefixCacheConfig
    from promptcache.store.redis import RedisStore, RedisStoreConfig

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "LocalEngine": ("promptcache.engine.local", "local"),
    "LocalEngineConfig": ("promptcache.engine.local", "local"),
    "PrefixCacheConfig": ("promptcache.prefix.config", "local"),
    "PromptCacheLangChainCache": ("promptcache.integrations.langchain", "langchain"),
    "RedisStore": ("promptcache.store.redis", "redis"),
    "RedisStoreConfig": ("promptcache.store.redis", "redis"),
    "UpstreamConfig": ("promptcache.engine.upstream", "server"),
    "UpstreamEngine": ("promptcache.engine.upstream", "server"),
}
"""Names imported on first use, each with its module and the extra that module needs."""


if not TYPE_CHECKING:  # mypy sees the names above, so a misspelt one stays an error

    def __getattr__(name: str) -> Any:
        try:
            module, extra = _LAZY[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        with needs_extra(extra, feature=f"promptcache.{name}"):
            value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuthenticationError",
    "Breakpoint",
    "CacheControl",
    "CacheHit",
    "ChatRequest",
    "Choice",
    "ImageBlock",
    "LocalEngine",
    "LocalEngineConfig",
    "MemoryStore",
    "MemoryStoreConfig",
    "Message",
    "MissingExtraError",
    "ModelNotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PrefixCacheConfig",
    "PromptCacheError",
    "PromptCacheLangChainCache",
    "RedisStore",
    "RedisStoreConfig",
    "RequestError",
    "ResponseCache",
    "ResponseStore",
    "Result",
    "SamplingParams",
    "SqliteStore",
    "SqliteStoreConfig",
    "StoreError",
    "StoreStats",
    "StoredEntry",
    "TextBlock",
    "TextDelta",
    "Tool",
    "ToolResultBlock",
    "ToolUseBlock",
    "Transport",
    "UpstreamConfig",
    "UpstreamEngine",
    "UpstreamError",
    "Usage",
    "__version__",
    "langchain_key",
    "open_store",
    "redact_url",
    "response_key",
]
