"""The local engine: one request through render -> prefix cache -> prefill -> decode.

Per request (:meth:`LocalEngine.generate`):

1. validate (sampling ranges, breakpoints, context length, output schemas) and
   render the canonical request to token ids and breakpoint positions
   (``prompt.py``);
2. ``match`` the longest cached prefix for the tenant (waiting for blocks
   another request is computing), ``gather`` its KV into a private buffer;
3. prefill only the rest -- at least the last prompt token, whose logits start
   decoding -- and ``commit`` the prompt's blocks and breakpoint pins straight
   away, so concurrent and later requests can hit them while this one decodes;
4. decode with ``sampling.py`` -- through the request's output grammar, if
   any (``structured_output.py``) -- yielding a ``PromptUsage``, ``TextDelta`` s and
   one ``Result`` whose ``Usage`` splits the prompt exactly (``usage.py``);
5. ``release`` the match in every case, including cancellation and errors.

Requests run on the server's worker threads; every forward runs on one
compute thread (``executor.py``), which takes prefill chunks and decode
batches in turn and runs the concurrent requests' decode steps as one batched
forward. The prefix cache is thread-safe on its own: ``match`` runs on the
workers (it may wait for another request's prefill, which the compute thread
finishes meanwhile); ``gather`` and ``commit``, being big copies, run on the
compute thread too.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from promptcache.engine.base import ModelInfo, PrefixCacheSnapshot
from promptcache.engine.local.executor import BatchingStats, ModelExecutor
from promptcache.engine.local.prompt import ChatRenderer, RenderedPrompt
from promptcache.engine.local.sampling import (
    DEFAULT_MAX_TOKENS,
    Detokenizer,
    TextStream,
    TokenSampler,
    validate_sampling,
)
from promptcache.engine.local.structured_output import OutputGrammar, OutputGrammars
from promptcache.engine.local.tool_calls import ToolCallCapture, tool_calls_allowed
from promptcache.errors import RequestError
from promptcache.model.loading import LoadedModel, load_model
from promptcache.model.runtime import LlamaRuntime
from promptcache.model.torch_threads import torch_threads
from promptcache.prefix.cache import PrefixCache, PrefixCacheConfig
from promptcache.prefix.pool import KVLayout
from promptcache.request import (
    ChatRequest,
    Choice,
    FinishReason,
    PromptUsage,
    Result,
    StreamEvent,
    TextDelta,
    ToolUseBlock,
)
from promptcache.usage import WrittenBreakpoint, account_prompt

PREFILL_CHUNK_TOKENS = 512
"""Prefill granularity: bounds activation memory, and lets other requests'
decode steps and cancellation in between chunks of a long prompt."""
INITIAL_DECODE_ROOM = 128
"""KV positions reserved for output up front; the buffer doubles when decoding
needs more, so a large ``max_tokens`` costs no memory (or zeroing) unless used."""


DEFAULT_DECODE_BATCH = 8
DECODE_PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True, kw_only=True)
class LocalEngineConfig:
    """How to build a :class:`LocalEngine` (``model`` None = the embedded SmolLM2)."""

    model: str | None = None
    served_name: str | None = None
    prefix_cache: PrefixCacheConfig = field(default_factory=PrefixCacheConfig)
    max_context_tokens: int | None = None
    decode_precision: str = "float16"
    """Weights used by single-token decode steps: ``float16`` halves the memory
    traffic that bounds decode speed on CPU (~2x tokens/s); prefill, the KV cache
    and all non-matmul maths stay float32. Cache hits and misses decode through
    the same path, so the hit-equals-miss guarantee holds either way;
    ``float32`` matches transformers' own decode bit for bit (for a request
    decoded alone: batched with others, up to float summation order)."""
    decode_batch: int = DEFAULT_DECODE_BATCH
    """Most concurrent requests whose decode steps run as one forward (1: none)."""

    def __post_init__(self) -> None:
        if self.decode_precision not in DECODE_PRECISIONS:
            raise ValueError(
                f"LocalEngineConfig.decode_precision must be one of "
                f"{sorted(DECODE_PRECISIONS)}, got {self.decode_precision!r}"
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


@dataclass
class _ChoiceOutcome:
    text: str = ""
    finish_reason: FinishReason = "length"
    stop_sequence: str | None = None
    tokens: int = 0
    tool_calls: tuple[ToolUseBlock, ...] = ()


class LocalEngine:
    """A :class:`~promptcache.engine.base.SyncEngine` over a local transformers Llama model."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        prefix_cache: PrefixCacheConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        served_name: str | None = None,
        max_context_tokens: int | None = None,
        decode_precision: str = "float16",
        decode_batch: int = DEFAULT_DECODE_BATCH,
        executor: ModelExecutor | None = None,
    ) -> None:
        """``executor``: the thread to run model work on (default: a new one); ``loaded``
        should have been loaded on it too, as :meth:`from_config` does."""
        if decode_precision not in DECODE_PRECISIONS:
            raise ValueError(
                f"decode_precision must be one of {sorted(DECODE_PRECISIONS)}, "
                f"got {decode_precision!r}"
            )
        if decode_batch < 1:
            raise ValueError(f"decode_batch must be at least 1, got {decode_batch}")
        self._loaded = loaded
        # Model work, set-up included, runs on the executor's thread (torch_threads.py).
        self._executor = executor or ModelExecutor()
        self._runtime = self._executor.call(
            functools.partial(
                LlamaRuntime,
                loaded.weights,
                decode_weight_dtype=DECODE_PRECISIONS[decode_precision],
            )
        )
        self._decoder = self._executor.lane(self._runtime.decode_batch, max_batch=decode_batch)
        self._tokenizer = loaded.tokenizer
        self._renderer = ChatRenderer(loaded.tokenizer)
        self.served_name = served_name or loaded.name
        self.context_tokens = _context_length(loaded, max_context_tokens)
        self._eos_ids = _eos_token_ids(loaded)
        self._grammars = OutputGrammars(
            loaded.tokenizer, vocab_size=self._runtime.vocab_size, eos_ids=self._eos_ids
        )
        layout = KVLayout(
            num_layers=self._runtime.num_layers,
            num_kv_heads=self._runtime.num_kv_heads,
            head_dim=self._runtime.head_dim,
            dtype=self._runtime.dtype,
        )
        self._cache = PrefixCache(
            prefix_cache or PrefixCacheConfig(), layout, model_id=loaded.model_id, clock=clock
        )
        self._buffers = _KVBuffers(self._runtime)

    @classmethod
    def from_config(cls, config: LocalEngineConfig) -> LocalEngine:
        executor = ModelExecutor()
        return cls(
            executor.call(functools.partial(load_model, config.model)),
            executor=executor,
            prefix_cache=config.prefix_cache,
            served_name=config.served_name,
            max_context_tokens=config.max_context_tokens,
            decode_precision=config.decode_precision,
            decode_batch=config.decode_batch,
        )

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
    def prefix_cache(self) -> PrefixCache:
        return self._cache

    def models(self) -> list[ModelInfo]:
        aliases = (self._loaded.name,) if self._loaded.name != self.served_name else ()
        return [ModelInfo(id=self.served_name, aliases=aliases)]

    def prefix_stats(self) -> PrefixCacheSnapshot:
        return self._cache.stats()

    def batching_stats(self) -> BatchingStats:
        """How concurrent decode steps were batched so far."""
        return self._decoder.stats

    def clear_prefix_cache(self) -> None:
        self._cache.clear()

    def generate(
        self, request: ChatRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        """Stream one request: ``PromptUsage``, ``TextDelta`` s, then one ``Result``.

        Validation happens on the first ``next()`` (a RequestError raises there,
        before anything is yielded or any KV is referenced), so a caller that
        only iterates inside its error handling sees every error.
        """
        validate_sampling(request.sampling)
        prompt = self._renderer.render(request)
        max_tokens = self._max_new_tokens(request, len(prompt.token_ids))
        grammar = self._grammars.for_request(request)
        yield from self._stream(request, prompt, max_tokens, grammar, cancel or threading.Event())

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

    def _stream(
        self,
        request: ChatRequest,
        prompt: RenderedPrompt,
        max_tokens: int,
        grammar: OutputGrammar | None,
        cancel: threading.Event,
    ) -> Iterator[StreamEvent]:
        tokens = prompt.token_ids
        match = self._cache.match(list(tokens), salt=request.tenant, cancel=cancel)
        kv: _KVBuffer | None = None
        pending_commit: Callable[[], object] | None = None
        try:
            if cancel.is_set():
                return
            kv = _KVBuffer(
                self._buffers,
                len(tokens) + min(max_tokens, INITIAL_DECODE_ROOM),
                len(tokens) + max_tokens,
            )
            self._executor.call(functools.partial(self._cache.gather, match, kv.tensor))
            # A full hit still recomputes the last prompt token: its logits
            # start decoding. Its KV slot is rewritten with the same values.
            start = min(match.num_tokens, len(tokens) - 1)
            logits = self._prefill(tokens, kv.tensor, start, cancel)
            if logits is None:
                return
            buffer = kv
            committed = False

            def commit() -> list[WrittenBreakpoint]:
                nonlocal committed
                if committed:
                    return []
                committed = True
                report = self._executor.call(
                    functools.partial(
                        self._cache.commit,
                        match,
                        list(tokens),
                        buffer.tensor,
                        pins=list(prompt.breakpoint_positions),
                    )
                )
                return [WrittenBreakpoint(position=p, ttl=ttl) for p, ttl in report.pinned]

            # Usage depends on what commit pinned, so with breakpoints it commits
            # now. Without, usage is known already and the commit (a copy of the
            # new KV into the cache) waits until the first token is out, keeping
            # it off the time to first token; waiters are held one step longer.
            pending_commit = commit
            written = commit() if prompt.breakpoint_positions else []
            prompt_usage = account_prompt(
                prompt_tokens=len(tokens),
                cache_hit_tokens=match.num_tokens,
                breakpoints=written,
            )
            yield PromptUsage(usage=prompt_usage)
            outcomes: list[_ChoiceOutcome] = []
            for index in range(request.sampling.n):
                outcome = _ChoiceOutcome()
                # Choices share the prompt KV: decoding only writes positions
                # past the prompt, which the next choice overwrites.
                yield from self._decode(
                    request,
                    index,
                    logits,
                    kv,
                    len(tokens),
                    max_tokens,
                    grammar,
                    outcome,
                    cancel,
                    commit,
                )
                commit()  # the prefill is done: store it even if cancelled now
                if cancel.is_set():
                    return
                outcomes.append(outcome)
            yield Result(
                id=f"pc-{uuid.uuid4().hex}",
                model=self.served_name,
                created=int(time.time()),
                choices=tuple(
                    Choice(
                        index=i,
                        text=o.text,
                        finish_reason=o.finish_reason,
                        stop_sequence=o.stop_sequence,
                        tool_calls=o.tool_calls,
                    )
                    for i, o in enumerate(outcomes)
                ),
                usage=account_prompt(
                    prompt_tokens=len(tokens),
                    cache_hit_tokens=match.num_tokens,
                    breakpoints=written,
                    output_tokens=sum(o.tokens for o in outcomes),
                ),
            )
        except GeneratorExit:
            # Closed by the consumer: the prefill is done, so still store it.
            if pending_commit is not None:
                pending_commit()
            raise
        finally:
            self._cache.release(match)
            if kv is not None:
                kv.close()

    def _prefill(
        self, tokens: tuple[int, ...], kv: torch.Tensor, start: int, cancel: threading.Event
    ) -> torch.Tensor | None:
        logits: torch.Tensor | None = None
        for chunk_start in range(start, len(tokens), PREFILL_CHUNK_TOKENS):
            if cancel.is_set():
                return None
            chunk = tokens[chunk_start : chunk_start + PREFILL_CHUNK_TOKENS]
            logits = self._executor.call(
                functools.partial(self._runtime.forward, chunk, kv, chunk_start)
            )
        return logits

    def _decode(
        self,
        request: ChatRequest,
        index: int,
        prompt_logits: torch.Tensor,
        kv: _KVBuffer,
        position: int,
        max_tokens: int,
        grammar: OutputGrammar | None,
        outcome: _ChoiceOutcome,
        cancel: threading.Event,
        after_first_token: Callable[[], object],
    ) -> Iterator[TextDelta]:
        sampler = TokenSampler(request.sampling, choice_index=index)
        constraint = self._grammars.constraint(grammar) if grammar is not None else None
        stream = TextStream(
            _LockedDetokenizer(self._tokenizer, self._renderer.tokenizer_lock),
            request.sampling.stop,
        )
        capture = ToolCallCapture() if tool_calls_allowed(request) else None
        logits = prompt_logits
        with self._decoder.decoding():
            for step in range(max_tokens):
                if cancel.is_set():
                    return
                with torch_threads(1):  # not the compute thread (torch_threads.py)
                    if constraint is not None:
                        logits = constraint.restrict(logits)
                    token = sampler.sample(logits)
                outcome.tokens += 1
                if token in self._eos_ids:
                    outcome.finish_reason = "stop"
                    break
                if constraint is not None:
                    constraint.accept(token)
                delta = stream.push(token)
                if capture is not None:
                    delta = capture.feed(delta)
                if delta:
                    yield TextDelta(choice_index=index, text=delta)
                if stream.stopped_by is not None:
                    outcome.finish_reason, outcome.stop_sequence = "stop", stream.stopped_by
                    break
                if step + 1 == max_tokens:
                    break
                if step == 0:
                    after_first_token()
                if kv.tensor.shape[3] <= position:  # grow it (a copy: model-thread work)
                    self._executor.call(functools.partial(kv.ensure, position + 1))
                logits = self._decoder.step(token, kv.tensor, position)
                position += 1
        tail = stream.flush()
        outcome.text = stream.text
        if capture is not None:
            tail = capture.feed(tail)
            rest, outcome.text, outcome.tool_calls = capture.finish()
            tail += rest
            if outcome.tool_calls:
                outcome.finish_reason = "tool_calls"
        if tail:
            yield TextDelta(choice_index=index, text=tail)


class _LockedDetokenizer:
    def __init__(self, tokenizer: Detokenizer, lock: threading.Lock) -> None:
        self._tokenizer = tokenizer
        self._lock = lock

    def decode(self, token_ids: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._tokenizer.decode(token_ids, **kwargs)


class _KVBuffers:
    """Idle request KV buffers kept for reuse (up to ``keep_bytes``), thread-safe.

    A fresh multi-megabyte buffer costs zeroing and page faults on every
    request -- a visible share of a cache hit's time to first token. A reused
    buffer needs neither: stale contents are harmless because every position
    is written (gather, prefill, decode) before attention reads it.
    """

    def __init__(self, runtime: LlamaRuntime, *, keep_bytes: int = 256 << 20) -> None:
        self._shape = (runtime.num_layers, 2, runtime.num_kv_heads, runtime.head_dim)
        self._dtype = runtime.dtype
        self._keep_bytes = keep_bytes
        self._idle: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def take(self, capacity: int) -> torch.Tensor:
        with self._lock:
            fitting = [
                i for i, t in enumerate(self._idle) if capacity <= t.shape[3] <= 2 * capacity + 256
            ]
            if fitting:
                best = min(fitting, key=lambda i: self._idle[i].shape[3])
                return self._idle.pop(best)
        layers, two, heads, dim = self._shape
        return torch.empty((layers, two, heads, capacity, dim), dtype=self._dtype)

    def give(self, tensor: torch.Tensor) -> None:
        with self._lock:
            self._idle.append(tensor)
            while sum(_nbytes(t) for t in self._idle) > self._keep_bytes:
                self._idle.pop(0)  # oldest first


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class _KVBuffer:
    """A request's KV tensor, grown (doubling, up to ``limit`` positions) as decoding needs."""

    def __init__(self, buffers: _KVBuffers, capacity: int, limit: int) -> None:
        self._buffers = buffers
        self._limit = limit
        self.tensor = buffers.take(capacity)

    def ensure(self, positions: int) -> None:
        capacity = self.tensor.shape[3]
        if positions <= capacity:
            return
        grown = self._buffers.take(min(max(positions, 2 * capacity), self._limit))
        grown[:, :, :, :capacity].copy_(self.tensor)
        self._buffers.give(self.tensor)
        self.tensor = grown

    def close(self) -> None:
        self._buffers.give(self.tensor)


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
