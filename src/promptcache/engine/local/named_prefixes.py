"""Prefilling and pinning a named prefix on the local engine (``POST /v1/cache/prefixes``).

The prefix of a request is its chat-template rendering of tools -> system ->
messages up to the end of its last block -- the last content block of the last
message, else the last system block, else the last tool: the block automatic
caching marks (:func:`~promptcache.request.automatic_breakpoint`). Its token
position is found as every breakpoint's is (``prompt.py``: the straddling
rule), so it is exactly the prefix that a request continuing with more messages
renders and matches.

Only full blocks are stored, so only they are prefilled (in chunks on the
compute thread, with a cancellation check between chunks); the commit and the
hold (:meth:`~promptcache.prefix.base.BasePrefixCache.hold`) run as one step on
the compute thread, where every other commit runs too, so no other request's
commit can evict the new blocks before they are held.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from promptcache.engine.local.executor import ModelExecutor
from promptcache.engine.local.kv_buffers import KVBuffer, KVBuffers
from promptcache.engine.local.prompt import ChatRenderer
from promptcache.errors import RequestError
from promptcache.model.runtime import LlamaRuntime
from promptcache.prefix.base import (
    BasePrefixCache,
    PinCapError,
    PrefixHold,
    PrefixMatch,
    PrefixNotCachedError,
)
from promptcache.prefix.named import NamedPrefixes, PinnedPrefix
from promptcache.request import CacheControl, ChatRequest, Message, TextBlock

_MARK = CacheControl(ttl="5m")  # only locates the boundary: nothing is pinned for 5 minutes


class PrefixCancelled(Exception):
    """The caller went away before the prefix was pinned (nothing was held)."""


class PrefixPinner:
    """Pins named prefixes of one local engine's model into its prefix cache."""

    def __init__(
        self,
        *,
        renderer: ChatRenderer,
        runtime: LlamaRuntime,
        executor: ModelExecutor,
        cache: BasePrefixCache,
        buffers: KVBuffers,
        registry: NamedPrefixes,
        context_tokens: int,
    ) -> None:
        self._renderer = renderer
        self._runtime = runtime
        self._executor = executor
        self._cache = cache
        self._buffers = buffers
        self._registry = registry
        self._context_tokens = context_tokens

    def prefix_tokens(self, request: ChatRequest) -> tuple[int, ...]:
        """The tokens of ``request`` up to the end of its last block (see the module docs)."""
        if request.breakpoints():
            raise RequestError(
                "A named prefix is pinned whole for its ttl: cache_control is not accepted "
                "in it (remove it; requests that start with the prefix still read it).",
                param="cache_control",
            )
        if request.messages:
            marked = replace(request, cache_control=_MARK)
        elif request.system or request.tools:
            # The renderer needs a message; the boundary lies before it, so which one is moot.
            filler = Message(role="user", content=(TextBlock(text="."),))
            if request.system:
                system = (*request.system[:-1], replace(request.system[-1], cache_control=_MARK))
                marked = replace(request, system=system, messages=(filler,))
            else:
                tools = (*request.tools[:-1], replace(request.tools[-1], cache_control=_MARK))
                marked = replace(request, tools=tools, messages=(filler,))
        else:
            raise RequestError(
                "A prefix needs content: messages, a system prompt or tools.", param="messages"
            )
        prompt = self._renderer.render(marked)
        if len(prompt.breakpoint_positions) != 1:
            raise RequestError(
                "The end of the prefix's last block could not be located in the rendered "
                "prompt (this model's chat template rewrites it).",
                param="messages",
            )
        return prompt.token_ids[: prompt.breakpoint_positions[0].position]

    def pin(
        self,
        request: ChatRequest,
        *,
        ttl_seconds: float,
        name: str | None,
        model: str,
        cancel: threading.Event,
    ) -> PinnedPrefix:
        """Prefill the prefix of ``request`` for its tenant, hold its blocks, register it."""
        tokens = self.prefix_tokens(request)
        size = self._cache.block_size
        full = len(tokens) // size * size
        minimum = max(self._cache.min_cache_tokens, size)
        if full < minimum:
            raise RequestError(
                f"The prefix is {len(tokens)} tokens; the prefix cache keeps prefixes of at "
                f"least {minimum} tokens (whole blocks of {size}; --min-cache-tokens).",
                param="messages",
            )
        if len(tokens) >= self._context_tokens:
            raise RequestError(
                f"The prefix is {len(tokens)} tokens; this model's maximum context length is "
                f"{self._context_tokens} tokens, with room for at least one more.",
                param="messages",
            )
        if not self._registry.room():
            raise RequestError(
                f"This server keeps at most {self._registry.max_prefixes} named prefixes; "
                "delete some first."
            )
        hold = self._compute_and_hold(tokens[:full], request.tenant, cancel)
        try:
            return self._registry.add(
                tenant=request.tenant,
                model=model,
                name=name,
                tokens=len(tokens),
                hold=hold,
                ttl_seconds=ttl_seconds,
            )
        except BaseException:
            self._cache.release_hold(hold)
            raise

    def _compute_and_hold(
        self, tokens: tuple[int, ...], tenant: str, cancel: threading.Event
    ) -> PrefixHold:
        cache = self._cache
        match = cache.match(list(tokens), salt=tenant, cancel=cancel)
        kv: KVBuffer | None = None
        try:
            if cancel.is_set():
                raise PrefixCancelled
            if match.num_tokens < len(tokens):
                kv = KVBuffer(self._buffers, len(tokens), len(tokens))
                self._prefill(match, tokens, kv, cancel)
            return self._executor.call(lambda: self._commit_and_hold(match, tokens, kv, tenant))
        finally:
            cache.release(match)
            if kv is not None:
                kv.close()

    def _prefill(
        self, match: PrefixMatch, tokens: tuple[int, ...], kv: KVBuffer, cancel: threading.Event
    ) -> None:
        start = match.num_tokens
        self._executor.call(lambda: self._cache.gather(match, kv.tensor))
        for chunk in self._runtime.prefill_chunks(tokens[start:], kv.tensor, start):
            if cancel.is_set():
                raise PrefixCancelled
            self._executor.call(chunk)

    def _commit_and_hold(
        self, match: PrefixMatch, tokens: tuple[int, ...], kv: KVBuffer | None, tenant: str
    ) -> PrefixHold:
        cache = self._cache
        if kv is not None:
            cache.commit(match, list(tokens), kv.tensor)
        try:
            return cache.hold(tokens, salt=tenant)
        except PinCapError as refused:
            raise RequestError(_cap_message(refused, cache), param="ttl") from None
        except PrefixNotCachedError as missing:
            raise RequestError(
                f"The KV cache has no room for this prefix: {missing.cached_tokens} of its "
                f"{missing.num_tokens} tokens could be stored, the rest of the budget "
                f"(kv_cache_bytes={cache.config.kv_cache_bytes}, --kv-cache-bytes) is held "
                "by requests in flight or pinned.",
                param="messages",
            ) from None


def _cap_message(refused: PinCapError, cache: BasePrefixCache) -> str:
    block = cache.block_size
    return (
        f"Pinning this prefix would exceed the pin cap: it needs {refused.needed_blocks} more "
        f"pinned blocks ({refused.needed_blocks * block} tokens), and "
        f"{refused.pinned_blocks} of at most {refused.max_pinned_blocks} blocks are pinned "
        f"already (max_pinned_fraction={cache.config.max_pinned_fraction:g} of "
        f"kv_cache_bytes={cache.config.kv_cache_bytes}). Delete pinned prefixes, shorten "
        "their ttl, or start the server with a larger --kv-cache-bytes."
    )
