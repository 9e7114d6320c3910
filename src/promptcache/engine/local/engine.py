"""The local engine: a local Llama-family model behind the prefix cache.

:class:`LocalEngine` is built from a :class:`LocalEngineConfig` (validated
once, when the config is made). It holds what every request shares -- the
model's runtime on its compute thread (``executor.py``), the prefix cache,
the renderer, the output grammars -- and serves each request as one
:class:`~promptcache.engine.local.generation.Generation`: validate and render
(``prompt.py``), then match -> gather -> prefill -> commit -> decode -> release
(``generation.py``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from promptcache.engine.base import ModelInfo, PrefixCacheSnapshot, no_named_prefixes
from promptcache.engine.local.executor import BatchingStats, ModelExecutor
from promptcache.engine.local.generation import EngineParts, Generation, LockedDetokenizer
from promptcache.engine.local.kv_buffers import KVBuffers
from promptcache.engine.local.kv_fingerprint import model_fingerprint
from promptcache.engine.local.named_prefixes import PrefixPinner
from promptcache.engine.local.prompt import ChatRenderer
from promptcache.engine.local.sampling import (
    DEFAULT_MAX_TOKENS,
    greedy_token,
    validate_sampling,
)
from promptcache.engine.local.structured_output import OutputGrammars
from promptcache.errors import RequestError
from promptcache.model.loading import LoadedModel, LoadProgress, load_model
from promptcache.model.precision_names import DECODE_PRECISIONS, PROMPT_PRECISIONS
from promptcache.model.runtime import PREFILL_CHUNK_TOKENS, LlamaRuntime
from promptcache.prefix.base import BasePrefixCache
from promptcache.prefix.cache import PrefixCache, PrefixCacheConfig
from promptcache.prefix.disabled import DisabledPrefixCache
from promptcache.prefix.named import NamedPrefixes, PinnedPrefix
from promptcache.prefix.pool import KVLayout
from promptcache.request import ChatRequest
from promptcache.result import StreamEvent

DEFAULT_DECODE_BATCH = 8


@dataclass(frozen=True, kw_only=True)
class LocalEngineConfig:
    """How to build a :class:`LocalEngine` (``model`` None = the embedded SmolLM2)."""

    model: str | None = None
    served_name: str | None = None
    prefix_cache: PrefixCacheConfig = field(default_factory=PrefixCacheConfig)
    max_context_tokens: int | None = None
    decode_precision: str = "auto"
    """Weights of decode steps (``promptcache.model.precision``): ``int4`` -- the
    GGUF's own 4-bit blocks (Q4_0/Q4_1) on PyTorch's CPU int4 kernel, ~4x fewer
    bytes per token than float16; ``float16``; ``float32`` -- the exact weights
    (transformers' greedy output; logits equal up to float32 summation order). ``auto``: int4 for a
    Q4_0/Q4_1 GGUF, else float16. The KV cache and all non-matmul maths stay
    float32; hits and misses decode through the same weights, so the
    hit-equals-miss guarantee holds for each."""
    prefill_precision: str = "auto"
    """Weights of prompt forwards: ``bfloat16`` (oneDNN's native bfloat16 matmuls,
    over fixed-size row tiles so a token's KV does not depend on how its prompt
    was chunked), ``float32`` (exact), or ``auto``: bfloat16 where it measures
    faster at start-up, else float32 (``model/precision.py``)."""
    decode_batch: int = DEFAULT_DECODE_BATCH
    """Most concurrent requests whose decode steps run as one forward (1: none)."""

    def __post_init__(self) -> None:
        if self.decode_precision not in DECODE_PRECISIONS:
            raise ValueError(
                f"LocalEngineConfig.decode_precision must be one of "
                f"{list(DECODE_PRECISIONS)}, got {self.decode_precision!r}"
            )
        if self.prefill_precision not in PROMPT_PRECISIONS:
            raise ValueError(
                f"LocalEngineConfig.prefill_precision must be one of "
                f"{list(PROMPT_PRECISIONS)}, got {self.prefill_precision!r}"
            )
        if self.decode_batch < 1:
            raise ValueError(
                f"LocalEngineConfig.decode_batch must be at least 1, got {self.decode_batch}"
            )
        if self.served_name is not None and not self.served_name.strip():
            raise ValueError("LocalEngineConfig.served_name must not be blank")
        if self.max_context_tokens is not None and self.max_context_tokens < 2:
            raise ValueError(
                f"LocalEngineConfig.max_context_tokens must be at least 2, "
                f"got {self.max_context_tokens}"
            )


class LocalEngine:
    """A :class:`~promptcache.engine.base.SyncEngine` over a local Llama-family model."""

    def __init__(
        self,
        config: LocalEngineConfig | None = None,
        *,
        loaded: LoadedModel,
        executor: ModelExecutor | None = None,
        clock: Callable[[], float] = time.monotonic,
        prefix_clock: Callable[[], float] = time.time,
    ) -> None:
        """An engine serving ``loaded`` as ``config`` says (``config.model`` aside:
        :meth:`from_config` loads it). ``executor``: the thread to run model work on
        (default: a new one); ``loaded`` should have been loaded on it too, as
        :meth:`from_config` does. ``clock``: the prefix cache's (TTLs);
        ``prefix_clock``: the named prefixes' (wall time: their ``expires_at``)."""
        config = config or LocalEngineConfig()
        self.config = config
        self._loaded = loaded
        # Model work, set-up included, runs on the executor's thread (torch_threads.py).
        self._executor = executor or ModelExecutor()
        self._runtime = self._executor.call(
            functools.partial(
                LlamaRuntime,
                loaded.weights,
                decode_precision=config.decode_precision,
                prefill_precision=config.prefill_precision,
                kv_dtype=config.prefix_cache.torch_kv_dtype,
            )
        )
        self._decoder = self._executor.lane(
            self._runtime.decode_batch, max_batch=config.decode_batch, pick=greedy_token
        )
        self._renderer = ChatRenderer(loaded.tokenizer)
        self.served_name = config.served_name or loaded.name
        self.context_tokens = _context_length(loaded, config.max_context_tokens)
        eos_ids = _eos_token_ids(loaded)
        self._grammars = OutputGrammars(
            loaded.tokenizer, vocab_size=self._runtime.vocab_size, eos_ids=eos_ids
        )
        layout = KVLayout(
            num_layers=self._runtime.num_layers,
            num_kv_heads=self._runtime.num_kv_heads,
            head_dim=self._runtime.head_dim,
            dtype=config.prefix_cache.torch_kv_dtype,
        )
        self._cache: BasePrefixCache = (
            PrefixCache(
                config.prefix_cache,
                layout,
                model_id=loaded.model_id,
                clock=clock,
                # The disk tier keeps KV across restarts: bind it to the tokenizer & co too.
                fingerprint=(
                    model_fingerprint(loaded, prefill_precision=self._runtime.prefill_precision)
                    if config.prefix_cache.disk_enabled
                    else None
                ),
            )
            if config.prefix_cache.enabled
            else DisabledPrefixCache(config.prefix_cache, layout, model_id=loaded.model_id)
        )
        self._parts = EngineParts(
            runtime=self._runtime,
            executor=self._executor,
            decoder=self._decoder,
            prefills=self._executor.batcher(
                self._runtime.forward_chunks, most=PREFILL_CHUNK_TOKENS
            ),
            cache=self._cache,
            buffers=KVBuffers(self._runtime, dtype=layout.dtype),
            detokenizer=LockedDetokenizer(loaded.tokenizer, self._renderer.tokenizer_lock),
            grammars=self._grammars,
            eos_ids=eos_ids,
            served_name=self.served_name,
        )
        self._named = NamedPrefixes(self._cache, clock=prefix_clock)
        self._pinner = PrefixPinner(
            renderer=self._renderer,
            runtime=self._runtime,
            executor=self._executor,
            cache=self._cache,
            buffers=self._parts.buffers,
            registry=self._named,
            context_tokens=self.context_tokens,
        )

    @classmethod
    def from_config(
        cls, config: LocalEngineConfig, *, progress: LoadProgress | None = None
    ) -> LocalEngine:
        """Load ``config.model`` (on the engine's compute thread) and serve it.

        ``progress``: told how loading goes (:data:`~promptcache.model.loading.LoadProgress`).
        """
        executor = ModelExecutor()
        loaded = executor.call(functools.partial(load_model, config.model, progress=progress))
        return cls(config, loaded=loaded, executor=executor)

    @property
    def loaded(self) -> LoadedModel:
        return self._loaded

    @property
    def renderer(self) -> ChatRenderer:
        return self._renderer

    @property
    def runtime(self) -> LlamaRuntime:
        """The model's forward passes; call them through :attr:`executor`."""
        return self._runtime

    @property
    def executor(self) -> ModelExecutor:
        """The thread all of this engine's model work runs on."""
        return self._executor

    @property
    def prefix_cache(self) -> BasePrefixCache:
        return self._cache

    def models(self) -> list[ModelInfo]:
        aliases = (self._loaded.name,) if self._loaded.name != self.served_name else ()
        return [ModelInfo(id=self.served_name, aliases=aliases)]

    def prefix_stats(self) -> PrefixCacheSnapshot:
        self._named.expire()
        return self._cache.stats()

    def batching_stats(self) -> BatchingStats:
        """How concurrent decode steps were batched so far."""
        return self._decoder.stats

    @property
    def decode_precision(self) -> str:
        """The precision decode steps run in (``auto`` resolved: int4, float16, float32)."""
        return self._runtime.decode_precision

    @property
    def prefill_precision(self) -> str:
        """The precision prompt forwards run in (``auto`` resolved: bfloat16, float32)."""
        return self._runtime.prefill_precision

    def close(self) -> None:
        """Finish the KV disk tier's queued writes and let its directory go (if there is
        one; at interpreter exit this happens anyway)."""
        if isinstance(self._cache, PrefixCache):
            self._cache.close()

    def clear_prefix_cache(self) -> None:
        self._named.clear()  # named prefixes too: nothing pinned is left
        self._cache.clear()

    @property
    def named_prefixes(self) -> NamedPrefixes | None:
        """The pinned, named prefixes (None when the prefix cache is off)."""
        return self._named if self.config.prefix_cache.enabled else None

    def pin_prefix(
        self,
        request: ChatRequest,
        *,
        ttl_seconds: float,
        name: str | None,
        model: str,
        cancel: threading.Event | None = None,
    ) -> PinnedPrefix:
        """Prefill the prefix of ``request`` (``named_prefixes.py``) and pin it for its tenant."""
        if self.named_prefixes is None:
            raise no_named_prefixes(self)
        self._named.expire()
        return self._pinner.pin(
            request,
            ttl_seconds=ttl_seconds,
            name=name,
            model=model,
            cancel=cancel or threading.Event(),
        )

    def generate(
        self, request: ChatRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        """Stream one request: ``PromptUsage``, ``TextDelta`` s, then one ``Result``.

        Validation (sampling ranges, breakpoints, context length, output schemas)
        happens on the first ``next()`` (a RequestError raises there, before
        anything is yielded or any KV is referenced), so a caller that only
        iterates inside its error handling sees every error.
        """
        validate_sampling(request.sampling, vocab_size=self._runtime.vocab_size)
        self._named.expire()  # before the cache may need the room an expired prefix held
        prompt = self._renderer.render(request)
        generation = Generation(
            self._parts,
            request,
            prompt,
            max_tokens=self._max_new_tokens(request, len(prompt.token_ids)),
            grammar=self._grammars.for_request(request),
            cancel=cancel or threading.Event(),
        )
        yield from generation.run()

    def _max_new_tokens(self, request: ChatRequest, prompt_tokens: int) -> int:
        room = self.context_tokens - prompt_tokens
        requested = request.sampling.max_tokens
        if room < 1 or (requested is not None and requested > room):
            asked = f" + {requested} requested for the completion" if requested else ""
            raise RequestError(
                f"This model's maximum context length is {self.context_tokens} tokens; "
                f"the prompt is {prompt_tokens} tokens{asked}. Shorten the messages"
                + (" or lower max_tokens." if requested else "."),
                param="max_tokens" if requested and room >= 1 else "messages",
            )
        return requested if requested is not None else min(room, DEFAULT_MAX_TOKENS)


def _context_length(loaded: LoadedModel, limit: int | None) -> int:
    native = int(getattr(loaded.config, "max_position_embeddings", 0) or 0)
    if limit is None:
        if native < 2:
            raise ValueError(
                "the model config has no max_position_embeddings; set max_context_tokens"
            )
        return native
    if native and limit > native:
        raise ValueError(
            f"max_context_tokens={limit} exceeds the model's context length ({native})"
        )
    return limit


def _eos_token_ids(loaded: LoadedModel) -> frozenset[int]:
    ids: set[int] = set()
    eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    generation = loaded.generation_config
    configured = getattr(generation, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list | tuple):
        ids.update(int(i) for i in configured)
    if not ids:
        raise ValueError("the model defines no end-of-sequence token")
    return frozenset(ids)
