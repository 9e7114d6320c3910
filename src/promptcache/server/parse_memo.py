"""Small LRUs for the hit path: parsed request bodies, and rendered hit bodies.

A response-cache hit is dominated by work that depends only on the bytes of
the body (plus dialect, tenant and namespace): JSON decoding, dialect
validation, model resolution and the canonical-JSON digest of the key.
Repeats are what a response cache exists for, so those results are
remembered for recent small bodies. Parsing is a pure function of its inputs,
so a memo entry is exactly what parsing again would produce. Likewise the
JSON body of a non-streamed hit is a function of (dialect, key, stored
result), so it is rendered once per stored result.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from promptcache.request import ChatRequest

MAX_ENTRIES = 2048
MAX_BODY_BYTES = 16 * 1024
"""Larger bodies (long prompts) are parsed every time: parsing is cheap next to
their generation, and they would crowd the memo."""


@dataclass(slots=True)
class ParsedRequest:
    request: ChatRequest
    """As the engine and the cache keys see it: ``model`` is the served model."""
    cache_key: str | None = None
    """The response-cache key, once computed (None until then)."""
    asked_model: str | None = None
    """The model name the client sent, when it is an alias of the served one (the
    response shows it); None when the client named the served model itself."""


MemoKey = tuple[str, str, str, bytes]
"""(route, tenant, namespace, body)."""

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry. Event loop only."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: K, value: V) -> None:
        if self.max_entries == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class ParseMemo(LRU[MemoKey, ParsedRequest]):
    """Parsed bodies; bodies over :data:`MAX_BODY_BYTES` are not remembered."""

    def put(self, key: MemoKey, value: ParsedRequest) -> None:
        if len(key[3]) <= MAX_BODY_BYTES:
            super().put(key, value)
