"""A lean forward pass for Llama-family decoders over an explicit KV buffer.

The local engine owns the KV state of a request as one tensor of shape
``[num_layers, 2, num_kv_heads, capacity, head_dim]`` (dim 1: 0 = keys after
RoPE, 1 = values; positions along dim 3), so the prefix cache can copy cached
blocks in and new blocks out with plain slicing. :class:`LlamaRuntime` runs
tokens at positions ``[start, start + n)`` against that buffer, writing their
keys/values into it.

It reads the weights of a Llama-family decoder (``llama``, ``mistral``,
``qwen2``: RMSNorm, RoPE, grouped-query attention, SiLU-gated MLP) -- a loaded
Hugging Face model, or :class:`~promptcache.model.weights.ModelWeights`
read straight from the weight files, with no transformers modeling code -- and is
faster than ``model.forward`` for single-stream decoding because decoding is
overhead- and bandwidth-bound on a CPU:

* q/k/v and gate/up projections are fused into one matmul each (the fused
  weights are built once by :mod:`promptcache.model.weights`; the HF
  modules are re-pointed at views of them, so no weight is held twice);
* matmuls go through oneDNN when available, and attention is one
  ``scaled_dot_product_attention`` call per layer that stays on PyTorch's CPU
  flash kernel (:mod:`promptcache.model.layers`);
* the RoPE cos/sin table is precomputed, with transformers' own frequency
  functions for the scaled variants, so each is reproduced exactly
  (:mod:`promptcache.model.rope`);
* one-token steps and short chunks (a suffix after a cache hit) run on the
  thread count measured to be faster right now (see ``__init__``).
* decode steps (:meth:`step`, :meth:`decode_batch`) read the decode
  precision's weights -- by default a GGUF's own 4-bit blocks -- and prompt
  forwards the exact ones, whatever their length (:mod:`promptcache.model.precision`).

Why the result does not depend on how a prefix was computed: a token's keys
and values depend only on the tokens before it, so restoring a prefix's KV
from the cache and running the rest gives the same numbers (up to float
summation order) as one pass over everything.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from promptcache.model.architecture import SUPPORTED_MODEL_TYPES, Architecture, lm_head
from promptcache.model.fused_decode import fused_decode_layers
from promptcache.model.layers import LayerMath
from promptcache.model.output_head import Int4Head
from promptcache.model.precision import (
    WeightSet,
    decode_weights,
    exact_set,
    fused_prompt_weights,
    prompt_weights,
)
from promptcache.model.rope import SUPPORTED_ROPE_TYPES, RopeTable
from promptcache.model.thread_tuning import ThreadCountTuner
from promptcache.model.torch_threads import torch_threads
from promptcache.model.weights import ModelWeights, fused_layer, required_tensor

__all__ = [
    "KV_DTYPES",
    "PREFILL_CHUNK_TOKENS",
    "SHORT_FORWARD_TOKENS",
    "SUPPORTED_MODEL_TYPES",
    "SUPPORTED_ROPE_TYPES",
    "LlamaRuntime",
    "PromptChunk",
]

PREFILL_CHUNK_TOKENS = 512
"""Prefill granularity: bounds activation memory, and lets other requests'
decode steps and cancellation in between chunks of a long prompt."""
SHORT_FORWARD_TOKENS = 64
"""Forwards of at most this many tokens run on ``decode_threads`` threads."""
KV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Dtypes a KV buffer may have (``--kv-dtype``): attention runs in the buffer's dtype."""
PromptChunk = tuple[torch.Tensor, torch.Tensor, int]
"""(token ids, the sequence's KV buffer, the first token's position): one prefill chunk."""


class LlamaRuntime:
    """Forward passes of a Llama-family model over a caller-owned KV buffer (batch size 1)."""

    def __init__(
        self,
        model: torch.nn.Module | ModelWeights,
        *,
        use_onednn: bool | None = None,
        decode_threads: int | None = None,
        decode_precision: str = "float32",
        prefill_precision: str = "float32",
        kv_dtype: torch.dtype | None = None,
    ) -> None:
        """Read ``model``'s weights (fusing projections in place; values unchanged).

        ``model``: a Hugging Face Llama-family model, or its :class:`ModelWeights`.

        ``use_onednn``: route matmuls through oneDNN (default: when it works here).
        ``decode_threads``: torch threads for forwards of at most
        ``SHORT_FORWARD_TOKENS`` tokens (decode steps, a suffix after a cache hit).
        Default: chosen by measurement between torch's current setting and 1
        thread (:class:`~promptcache.model.thread_tuning.ThreadCountTuner`,
        timing decode steps). Such a forward is a few hundred small bandwidth-bound
        matmuls: on a 2-core machine two threads decode ~1.4x faster than one while
        both cores are free, and ~3x slower while another process holds a core,
        so no fixed value is right on both. Long prefills always use torch's setting.
        ``decode_precision``: the weights of decode steps (:meth:`step`,
        :meth:`decode_batch`): ``int4`` (the GGUF's 4-bit blocks), ``float16``,
        ``float32`` (exact) or ``auto`` -- see :mod:`promptcache.model.precision`.
        Decoding a small model on a CPU is memory-bandwidth-bound, so fewer bytes
        per weight decode faster; the residual stream, norms, attention and the
        KV buffer stay in the model dtype.
        ``prefill_precision``: the weights of prompt forwards (:meth:`forward`,
        :meth:`prefill`): ``int4`` (the decode step's fused GGUF-block layers, a
        chunk's tokens as its rows), ``float32`` (exact), ``bfloat16`` (fixed-size
        tiles, so a prompt token's KV does not depend on how the prompt was chunked),
        or ``auto`` (``int4`` where the fused layers run, else ``bfloat16`` where it
        measures faster here) -- see :mod:`promptcache.model.precision`.
        ``kv_dtype``: the dtype of the KV buffers this runtime will be given (default
        the model's): ``int4`` prompts need float32.
        """
        if decode_threads is not None and decode_threads <= 0:
            raise ValueError(f"decode_threads must be positive, got {decode_threads}.")
        weights = model if isinstance(model, ModelWeights) else ModelWeights.of_module(model)
        config, tensors = weights.config, weights.tensors
        arch = Architecture.of(config)
        self._num_kv_heads = arch.num_kv_heads
        self._head_dim = arch.head_dim
        self._max_positions = arch.max_positions
        self._window = arch.window
        self._embed = required_tensor(tensors, "model.embed_tokens.weight")
        self._final_norm = required_tensor(tensors, "model.norm.weight")
        self._lm_head = lm_head(config, tensors)
        self._dtype = self._embed.dtype
        self._layers = [
            fused_layer(tensors, f"model.layers.{index}.")
            for index in range(int(config.num_hidden_layers))
        ]
        self._rope = RopeTable(config, self._head_dim, self._dtype)
        self._math = LayerMath(arch, self._dtype, onednn=use_onednn)
        exact = exact_set(self._layers, self._lm_head)
        self._decode = decode_weights(decode_precision, weights, exact)
        self._fused_decode = fused_decode_layers(self._decode.layers, arch, self._dtype)
        # Prompts on the fused decode layers where they run (precision.py says why); the
        # fused layers exist only for a float32 model, so None means a float32 KV.
        fused_prompts = self._fused_decode is not None and kv_dtype in (None, torch.float32)
        if prefill_precision in ("auto", "int4") and fused_prompts:
            self._prompt = fused_prompt_weights(self._decode, exact)
        else:
            self._prompt = prompt_weights(prefill_precision, exact)
        self._decode_threads = decode_threads
        all_threads = torch.get_num_threads()
        self._thread_tuner = (
            ThreadCountTuner(preferred=all_threads, alternative=1)
            if decode_threads is None and all_threads > 1
            else None
        )

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    @property
    def num_kv_heads(self) -> int:
        return self._num_kv_heads

    @property
    def head_dim(self) -> int:
        return self._head_dim

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def vocab_size(self) -> int:
        return int(self._lm_head.shape[0])

    @property
    def max_positions(self) -> int:
        """The model's trained context length (``max_position_embeddings``)."""
        return self._max_positions

    def new_kv(self, capacity: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A zeroed KV buffer ``[num_layers, 2, num_kv_heads, capacity, head_dim]``.

        ``dtype``: one of :data:`KV_DTYPES` (default: the model's). Keys and values
        are rounded to it when written, and attention runs over them in it."""
        if capacity <= 0:
            raise ValueError(f"KV capacity must be positive, got {capacity}.")
        shape = (self.num_layers, 2, self._num_kv_heads, capacity, self._head_dim)
        return torch.zeros(shape, dtype=self._dtype if dtype is None else dtype)

    def kv_bytes_per_token(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of KV state one token occupies (keys and values, all layers)."""
        itemsize = (self._dtype if dtype is None else dtype).itemsize
        return self.num_layers * 2 * self._num_kv_heads * self._head_dim * itemsize

    @property
    def decode_precision(self) -> str:
        """What decode steps multiply by: ``int4``, ``float16`` or ``float32``."""
        return self._decode.precision

    @property
    def decode_kernel(self) -> str:
        """What decode steps' matrices run on: ``gguf-blocks``, ``torch-int4``, or the float
        precision (see :attr:`WeightSet.kernel <promptcache.model.precision.WeightSet.kernel>`)."""
        return self._decode.kernel

    @property
    def prefill_precision(self) -> str:
        """What prompt forwards multiply by: ``int4``, ``bfloat16`` or ``float32``."""
        return self._prompt.precision

    def weight_bytes(self, role: str = "decode") -> int:
        """Bytes of matmul weights one forward of ``role`` ("decode"/"prefill") reads."""
        return (self._decode if role == "decode" else self._prompt).weight_bytes

    @torch.inference_mode()
    def forward(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        kv: torch.Tensor,
        start: int,
        *,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """Run prompt tokens ``input_ids`` at positions ``[start, start + n)`` over
        ``kv[..., :start, :]``, on the prompt weights (``prefill_precision``) however
        few they are; generated tokens go through :meth:`step` instead.

        Writes the tokens' keys/values into ``kv`` and returns the logits of the
        last token (``[vocab]``), or of every token (``[n, vocab]``) with
        ``all_logits``.
        """
        ids = _as_ids(input_ids)
        with self._prompt_threads(int(ids.shape[0])):
            return self._forward(ids, kv, start, self._prompt, all_logits=all_logits)

    def _prompt_threads(self, rows: int) -> contextlib.AbstractContextManager[None]:
        """Torch threads for a prompt forward of ``rows`` tokens: a short one's (a suffix
        after a hit) as preferred now, a long one's all of the current setting."""
        if rows > SHORT_FORWARD_TOKENS:
            return contextlib.nullcontext()
        return torch_threads(self.short_forward_threads)

    @torch.inference_mode()
    def step(self, token: int, kv: torch.Tensor, position: int) -> torch.Tensor:
        """One generated token at ``position``, on the decode weights; its logits ``[vocab]``.

        Timed for the thread-count tuner: decode steps are alike and frequent."""
        if self._thread_tuner is None:
            with torch_threads(self._decode_threads or torch.get_num_threads()):
                return self._decode_rows([token], [kv], [position])[0]
        threads = self._thread_tuner.next_threads()
        began = time.perf_counter()
        with torch_threads(threads):
            logits = self._decode_rows([token], [kv], [position])[0]
        self._thread_tuner.record(threads, time.perf_counter() - began)
        return logits

    @property
    def short_forward_threads(self) -> int:
        """Threads the next short forward (decode step, short suffix) runs on, as preferred now."""
        if self._thread_tuner is not None:
            return self._thread_tuner.preferred
        return self._decode_threads or torch.get_num_threads()

    def _forward(
        self,
        ids: torch.Tensor,
        kv: torch.Tensor,
        start: int,
        weights: WeightSet,
        *,
        all_logits: bool,
    ) -> torch.Tensor:
        count = int(ids.shape[0])
        end = start + count
        self._check(kv, start, end)
        if weights.precision == "int4":
            x = self._fused_prompt([(ids, kv, start)])
        else:
            cos, sin = self._rope.span(start, end)
            mask, causal = self._math.mask(start, count)
            x = F.embedding(ids, self._embed)
            for index, layer in enumerate(weights.layers):
                x = self._math.layer(x, layer, kv[index], start, end, cos, sin, mask, causal)
        if not all_logits:
            x = x[-1:]
        logits = self._head(x, weights)
        return logits if all_logits else logits[0]

    def _head(self, x: torch.Tensor, weights: WeightSet) -> torch.Tensor:
        """Logits of the hidden states ``x`` [rows, hidden]: final norm, then ``weights``' head."""
        return _head_logits(self._math, self._math.norm(x, self._final_norm), weights.lm_head)

    def _fused_prompt(self, chunks: Sequence[PromptChunk]) -> torch.Tensor:
        """Prompt chunks' tokens as rows of one decode step (``int4`` prompts), in order:
        each row's KV written at its position in its chunk's buffer, each attending up to
        itself; the hidden states after the layers (chunks checked by the caller)."""
        positions: list[int] = []
        buffers: list[torch.Tensor] = []
        for ids, kv, start in chunks:
            if kv.dtype != torch.float32 or self._fused_decode is None:
                raise ValueError(
                    f"int4 prompts run on the fused decode layers, which need a float32 KV "
                    f"buffer; got {kv.dtype}."
                )
            count = int(ids.shape[0])
            positions += range(start, start + count)
            buffers += [kv] * count
        assert self._fused_decode is not None
        cos, sin = self._rope.at(positions)
        ids = torch.cat([_as_ids(chunk_ids) for chunk_ids, _, _ in chunks])
        hidden: torch.Tensor = self._fused_decode.forward(
            F.embedding(ids, self._embed), buffers, positions, cos, sin
        )
        return hidden

    def prefill(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        kv: torch.Tensor,
        start: int,
        *,
        chunk_size: int = PREFILL_CHUNK_TOKENS,
    ) -> torch.Tensor:
        """:meth:`forward` in chunks of ``chunk_size`` tokens (bounds memory).

        Returns the last token's logits."""
        logits = torch.empty(0)
        for chunk in self.prefill_chunks(input_ids, kv, start, chunk_size=chunk_size):
            logits = chunk()
        return logits

    def prefill_chunks(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        kv: torch.Tensor,
        start: int,
        *,
        chunk_size: int = PREFILL_CHUNK_TOKENS,
    ) -> list[Callable[[], torch.Tensor]]:
        """:meth:`prefill` as one call per chunk, to run in order; each returns its chunk's
        last logits. A caller can run them on another thread, with other work or a
        cancellation check in between (the local engine does)."""
        return [
            functools.partial(self.forward, ids, buffer, offset)
            for ids, buffer, offset in self.prompt_chunks(
                input_ids, kv, start, chunk_size=chunk_size
            )
        ]

    def prompt_chunks(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        kv: torch.Tensor,
        start: int,
        *,
        chunk_size: int = PREFILL_CHUNK_TOKENS,
    ) -> list[PromptChunk]:
        """The (ids, kv, start) of each chunk of :meth:`prefill`, checked, to run in order
        with :meth:`forward_chunks` (alone or with other sequences' chunks)."""
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
        ids = _as_ids(input_ids)
        if ids.shape[0] == 0:
            raise ValueError("prefill needs at least one token.")
        self._check(kv, start, start + int(ids.shape[0]))
        return [
            (ids[offset : offset + chunk_size], kv, start + offset)
            for offset in range(0, int(ids.shape[0]), chunk_size)
        ]

    @torch.inference_mode()
    def forward_chunks(self, chunks: Sequence[PromptChunk]) -> list[torch.Tensor]:
        """Prompt chunks of several sequences (:meth:`prompt_chunks`, each its own KV
        buffer) as one forward where prompts run on the fused int4 layers, else one
        :meth:`forward` each; each chunk's last logits ``[vocab]``, in order.

        With ``int4`` prompts every chunk's tokens are rows of one call, so the weights
        are read once for all of them (several requests' new prompts at once). Each row
        is computed as it is alone (the fused layers' rows are independent, and the head
        runs a chunk's last row on its own), so the results are bitwise
        :meth:`forward`'s however the chunks are grouped."""
        if self._prompt.precision != "int4" or len(chunks) < 2:
            return [self.forward(ids, kv, start) for ids, kv, start in chunks]
        for ids, kv, start in chunks:
            if int(ids.shape[0]) == 0:
                raise ValueError("a prompt chunk needs at least one token.")
            self._check(kv, start, start + int(ids.shape[0]))
        rows = sum(int(ids.shape[0]) for ids, _, _ in chunks)
        with self._prompt_threads(rows):
            hidden = self._fused_prompt(chunks)
            logits: list[torch.Tensor] = []
            last = -1
            for ids, _, _ in chunks:
                last += int(ids.shape[0])
                logits.append(self._head(hidden[last : last + 1], self._prompt)[0])
        return logits

    def greedy(
        self,
        prompt_ids: Sequence[int] | torch.Tensor,
        max_new_tokens: int,
        *,
        stop_ids: Sequence[int] = (),
        kv: torch.Tensor | None = None,
        start: int = 0,
    ) -> list[int]:
        """Greedy continuation of ``prompt_ids`` (placed at ``start`` in ``kv``), stopping
        after a token in ``stop_ids`` (included) or ``max_new_tokens`` tokens."""
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
        ids = _as_ids(prompt_ids)
        end = start + int(ids.shape[0]) + max_new_tokens
        if kv is None:
            kv = self.new_kv(end)
        logits = self.prefill(ids, kv, start)
        position = start + int(ids.shape[0])
        out: list[int] = []
        stops = set(stop_ids)
        for _ in range(max_new_tokens):
            token = int(torch.argmax(logits))
            out.append(token)
            if token in stops or len(out) == max_new_tokens:
                break
            logits = self.step(token, kv, position)
            position += 1
        return out

    @torch.inference_mode()
    def decode_batch(self, steps: Sequence[tuple[int, torch.Tensor, int]]) -> torch.Tensor:
        """One-token steps of several sequences as one forward; returns ``[len(steps), vocab]``.

        ``steps``: (token, KV buffer, position) per sequence, each buffer its own.
        The matmuls -- the weight reads that bound decoding on a CPU -- run once
        for the whole batch; attention runs per sequence over its own buffer.
        Every batch size runs on the decode weights (``decode_precision``), so
        how many requests decode at once never changes which weights a token
        sees. With ``int4`` each row of the layer matmuls is bitwise what the step
        alone computes (the kernel accumulates each row on its own); other
        matmuls (the output head, float precisions) agree up to float
        summation order.
        """
        if len(steps) == 1:
            token, kv, position = steps[0]
            return self.step(token, kv, position)[None]
        with torch_threads(self.short_forward_threads):
            return self._decode_rows(
                [token for token, _, _ in steps],
                [kv for _, kv, _ in steps],
                [position for _, _, position in steps],
            )

    def _decode_rows(
        self, tokens: list[int], buffers: list[torch.Tensor], positions: list[int]
    ) -> torch.Tensor:
        """Logits ``[len(tokens), vocab]`` of one generated token per sequence, on the
        decode weights: a lone step and a batch run the same operations."""
        for kv, position in zip(buffers, positions, strict=True):
            self._check(kv, position, position + 1)
        if len(positions) == 1:
            cos, sin = self._rope.span(positions[0], positions[0] + 1)
        else:
            cos, sin = self._rope.at(positions)
        x = F.embedding(torch.tensor(tokens), self._embed)
        if self._fused_decode is not None and all(kv.dtype == torch.float32 for kv in buffers):
            x = self._fused_decode.forward(x, buffers, positions, cos, sin)
        else:
            for number, layer in enumerate(self._decode.layers):
                layer_buffers = [kv[number] for kv in buffers]
                x = self._math.decode_rows(x, layer, layer_buffers, positions, cos, sin)
        return self._head(x, self._decode)

    def _check(self, kv: torch.Tensor, start: int, end: int) -> None:
        expected = (self.num_layers, 2, self._num_kv_heads, self._head_dim)
        shape = tuple(kv.shape)
        if len(shape) != 5 or shape[:3] + shape[4:] != expected:
            raise ValueError(
                f"KV buffer has shape {shape}; expected "
                f"[{expected[0]}, 2, {expected[2]}, capacity, {expected[3]}]."
            )
        if kv.dtype not in KV_DTYPES:
            raise ValueError(
                f"KV buffer dtype {kv.dtype} is not one of {', '.join(map(str, KV_DTYPES))}."
            )
        if start < 0 or end > shape[3]:
            raise ValueError(
                f"Positions [{start}, {end}) do not fit a KV buffer of capacity {shape[3]}."
            )
        if self._window is not None and end > self._window:
            raise ValueError(
                f"Positions up to {end} exceed the model's sliding window ({self._window}), "
                "which this runtime does not implement."
            )


def _head_logits(math: LayerMath, x: torch.Tensor, head: torch.Tensor | Int4Head) -> torch.Tensor:
    if isinstance(head, Int4Head):
        return head.logits(x)
    return math.linear(x, head, None)


def _as_ids(input_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    if isinstance(input_ids, torch.Tensor):
        ids = (
            input_ids.reshape(-1) if input_ids.dim() == 2 and input_ids.shape[0] == 1 else input_ids
        )
        if ids.dim() != 1:
            raise ValueError(f"input_ids must be one sequence, got shape {tuple(input_ids.shape)}.")
        return ids.to(torch.long)
    return torch.tensor(list(input_ids), dtype=torch.long)
