"""A LangChain ``BaseCache`` over any promptcache store: ``set_llm_cache(...)`` drop-in.

    from langchain_core.globals import set_llm_cache
    from promptcache.integrations.langchain import PromptCacheLangChainCache

    set_llm_cache(PromptCacheLangChainCache("sqlite:///.langchain-cache.db"))

Entries are keyed on LangChain's ``(prompt, llm_string)`` pair through
:func:`promptcache.keys.langchain_key` and hold the generations serialised
with ``langchain_core.load.dumps``, so ``ChatGeneration``/``AIMessage``
round-trip identically and the values stay readable by LangChain itself.

Reading uses a fast reviver for the generation and message classes chat
models return (the same ``cls(**kwargs)`` LangChain's reviver performs,
without its per-call allow-list set-up); anything else falls back to
``langchain_core.load.loads`` restricted to langchain-core classes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumps, loads
from langchain_core.load.serializable import Serializable
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from promptcache.keys import langchain_key
from promptcache.store import ResponseStore, StoredEntry, open_store
from promptcache.store.base import validate_ttl

logger = logging.getLogger(__name__)

_FAST_CLASSES: dict[tuple[str, ...], type[Serializable]] = {
    tuple(cls.lc_id()): cls
    for cls in (
        Generation,
        GenerationChunk,
        ChatGeneration,
        ChatGenerationChunk,
        AIMessage,
        AIMessageChunk,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        FunctionMessage,
        ChatMessage,
    )
}


class PromptCacheLangChainCache(BaseCache):
    """LangChain's LLM cache interface over a promptcache store (sync and async).

    ``store`` is a :class:`~promptcache.store.ResponseStore` or a store URL
    (``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``).
    ``namespace`` partitions one store between several caches; ``ttl``
    (seconds) overrides the store's own default.
    """

    def __init__(
        self, store: ResponseStore | str, *, namespace: str = "", ttl: float | None = None
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.namespace = namespace
        self.ttl = validate_ttl(ttl)

    def _key(self, prompt: str, llm_string: str) -> str:
        return langchain_key(prompt, llm_string, namespace=self.namespace)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return self._decode(self.store.get(self._key(prompt, llm_string)))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        value = _encode(return_val)
        if value is not None:
            self.store.put(self._key(prompt, llm_string), value, ttl=self.ttl)

    def clear(self, **kwargs: Any) -> None:
        """Remove every entry of the underlying store (not only this namespace's)."""
        self.store.clear()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return self._decode(await self.store.aget(self._key(prompt, llm_string)))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        value = _encode(return_val)
        if value is not None:
            await self.store.aput(self._key(prompt, llm_string), value, ttl=self.ttl)

    async def aclear(self, **kwargs: Any) -> None:
        await self.store.aclear()

    def close(self) -> None:
        self.store.close()

    def _decode(self, entry: StoredEntry | None) -> RETURN_VAL_TYPE | None:
        if entry is None:
            return None
        try:
            return decode_generations(entry.value)
        except Exception as exc:  # an entry we cannot read is a miss, never an error
            logger.warning("promptcache: ignoring unreadable LangChain cache entry: %s", exc)
            return None


def encode_generations(generations: Sequence[Generation]) -> bytes:
    """The stored form: ``langchain_core.load.dumps`` of the list, UTF-8."""
    return dumps(list(generations)).encode("utf-8")


def decode_generations(value: bytes) -> list[Generation]:
    """Inverse of :func:`encode_generations`."""
    text = value.decode("utf-8")
    try:
        revived = json.loads(text, object_hook=_revive_node)
    except Exception:  # _NotFast, or anything the general loader may handle differently
        revived = loads(text, allowed_objects="core")
    if not isinstance(revived, list) or not all(isinstance(g, Generation) for g in revived):
        raise ValueError("the entry does not hold a list of LangChain generations")
    return revived


def _encode(return_val: RETURN_VAL_TYPE) -> bytes | None:
    value = encode_generations(return_val)
    # dumps() marks what it cannot serialise instead of failing; such an entry
    # could never be read back, so it is not stored (like LangChain's Redis cache).
    if b'"type": "not_implemented"' in value or b'"type":"not_implemented"' in value:
        logger.warning("promptcache: LangChain generation is not serialisable; not cached")
        return None
    return value


class _NotFast(Exception):
    """The payload needs LangChain's general reviver."""


def _revive_node(node: dict[str, Any]) -> Any:
    """``json.loads`` object hook: called children-first, the order LangChain's loader uses."""
    if "__lc_escaped__" in node:
        # User data that merely looks like a LangChain object; its inside was
        # already (wrongly) revived by this bottom-up hook, so start over.
        raise _NotFast
    if "lc" not in node:
        return node
    if node.get("lc") != 1 or node.get("type") != "constructor":
        raise _NotFast
    cls = _FAST_CLASSES.get(tuple(node.get("id") or ()))
    if cls is None:
        raise _NotFast
    return cls(**node.get("kwargs", {}))


__all__ = ["PromptCacheLangChainCache", "decode_generations", "encode_generations"]
