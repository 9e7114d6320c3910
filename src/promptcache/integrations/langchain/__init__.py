"""LangChain's LLM cache over promptcache stores: ``set_llm_cache(...)`` drop-ins.

LangChain's own class names, same constructor arguments -- change one import::

    from langchain_core.globals import set_llm_cache
    from promptcache.integrations.langchain import InMemoryCache, RedisCache, SQLiteCache

    set_llm_cache(InMemoryCache(maxsize=1000))
    set_llm_cache(SQLiteCache(database_path=".langchain-promptcache.db"))
    set_llm_cache(RedisCache(redis.Redis(), ttl=3600))

or any store by URL::

    from promptcache.integrations.langchain import PromptCacheLangChainCache

    set_llm_cache(PromptCacheLangChainCache("sqlite:///.langchain-cache.db"))

The classes and their differences from LangChain's are in ``_names.py``; the
adapter and its serialisation in ``_cache.py``.
"""

from __future__ import annotations

from promptcache.integrations.langchain._cache import (
    PromptCacheLangChainCache,
    decode_generations,
    encode_generations,
)
from promptcache.integrations.langchain._names import (
    InMemoryCache,
    RedisCache,
    SQLiteCache,
    import_langchain_sqlite,
    is_langchain_sqlite,
)

__all__ = [
    "InMemoryCache",
    "PromptCacheLangChainCache",
    "RedisCache",
    "SQLiteCache",
    "decode_generations",
    "encode_generations",
    "import_langchain_sqlite",
    "is_langchain_sqlite",
]
