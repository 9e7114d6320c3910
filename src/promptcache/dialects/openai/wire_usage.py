"""How OpenAI-compatible providers report usage, one reader per way: each takes the
response body (or the stream chunks' merged ``usage`` / ``timings``) and returns the
canonical :class:`~promptcache.result.Usage`. An upstream's provider profile picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from promptcache.result import Usage

UsageReader: TypeAlias = Callable[[Mapping[str, Any]], Usage]
"""Reads :class:`Usage` from a response body (or the stream chunk that carries usage)."""


def usage_from_wire(usage: Mapping[str, Any] | None) -> Usage:
    """Normalise an OpenAI-compatible usage object, whichever of the known cache fields
    it carries (``prompt_tokens_details.cached_tokens`` or DeepSeek's
    ``prompt_cache_hit_tokens``)."""
    if not usage:
        return Usage()
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or usage.get("prompt_cache_hit_tokens")
    return _split(usage, read=_count(cached))


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _split(usage: Mapping[str, Any], *, read: int, written: int = 0) -> Usage:
    """``prompt_tokens`` (which counts every prompt token) split into what was read from
    the cache, written to it, and neither."""
    prompt = _count(usage.get("prompt_tokens"))
    read = min(read, prompt)
    written = min(written, prompt - read)
    output = _count(usage.get("completion_tokens"))
    details = usage.get("completion_tokens_details")
    reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, Mapping) else 0
    return Usage(
        input_tokens=prompt - read - written,
        cache_read_input_tokens=read,
        cache_creation_5m_input_tokens=written,
        output_tokens=output,
        reasoning_tokens=min(reasoning, output),
    )


def openai_usage(body: Mapping[str, Any]) -> Usage:
    """OpenAI's ``prompt_tokens_details.cached_tokens`` (also GLM's, vLLM's with
    ``--enable-prompt-tokens-details`` and SGLang's with ``--enable-cache-report``)."""
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return _split(usage, read=_count(details.get("cached_tokens")))


def openrouter_usage(body: Mapping[str, Any]) -> Usage:
    """OpenRouter's: ``cached_tokens`` read and ``cache_write_tokens`` written (at the
    5-minute rate: OpenRouter does not split writes by TTL)."""
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return _split(
        usage,
        read=_count(details.get("cached_tokens")),
        written=_count(details.get("cache_write_tokens")),
    )


def deepseek_usage(body: Mapping[str, Any]) -> Usage:
    """DeepSeek's ``prompt_cache_hit_tokens`` (+ ``prompt_cache_miss_tokens`` = prompt)."""
    usage = body.get("usage") or {}
    return _split(usage, read=_count(usage.get("prompt_cache_hit_tokens")))


def llamacpp_usage(body: Mapping[str, Any]) -> Usage:
    """llama.cpp's server: ``timings.cache_n`` prompt tokens reused from the slot's KV
    cache, ``timings.prompt_n`` evaluated; ``usage`` when the server sent one (newer
    builds also fill ``prompt_tokens_details.cached_tokens``)."""
    timings = body.get("timings") or {}
    usage = dict(body.get("usage") or {})
    cache_n, prompt_n = _count(timings.get("cache_n")), _count(timings.get("prompt_n"))
    if not usage.get("prompt_tokens") and (cache_n or prompt_n):
        usage["prompt_tokens"] = cache_n + prompt_n
    if not usage.get("completion_tokens"):
        usage["completion_tokens"] = _count(timings.get("predicted_n"))
    details = usage.get("prompt_tokens_details") or {}
    return _split(usage, read=cache_n or _count(details.get("cached_tokens")))


def compatible_usage(body: Mapping[str, Any]) -> Usage:
    """Any OpenAI-compatible server's usage, whichever known cache fields it carries
    (OpenAI's and OpenRouter's, DeepSeek's, llama.cpp's timings): for upstreams of no
    known provider."""
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    if "prompt_cache_hit_tokens" in usage and not details.get("cached_tokens"):
        return deepseek_usage(body)
    if body.get("timings") and not details.get("cached_tokens"):
        return llamacpp_usage(body)
    return openrouter_usage(body)
