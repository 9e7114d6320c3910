"""The hit-path memos are bounded and skip large bodies."""

from __future__ import annotations

import pytest

from promptcache.request import ChatRequest
from promptcache.server.parse_memo import LRU, MAX_BODY_BYTES, ParsedRequest, ParseMemo


def test_lru_forgets_the_least_recently_used() -> None:
    lru: LRU[str, int] = LRU(max_entries=2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the oldest
    lru.put("c", 3)
    assert lru.get("b") is None
    assert (lru.get("a"), lru.get("c"), len(lru)) == (1, 3, 2)


def test_parse_memo_skips_large_bodies() -> None:
    memo = ParseMemo()
    parsed = ParsedRequest(request=ChatRequest(model="m", messages=()))
    memo.put(("openai", "", "", b"x" * (MAX_BODY_BYTES + 1)), parsed)
    memo.put(("openai", "", "", b"small"), parsed)
    assert len(memo) == 1
    assert memo.get(("openai", "", "", b"small")) is parsed
    with pytest.raises(ValueError):
        ParseMemo(max_entries=-1)
