"""Which weights a forward multiplies by: decode and prompt precisions.

The runtime keeps the model's exact float32 weights and, per role, the copies
a precision asks for:

* **decode** (one generated token per sequence per step; bound by the bytes of
  weights read): ``int4`` -- the GGUF's own 4-bit blocks, on the GGUF block
  kernels where they run (:mod:`promptcache.model.block_kernels`), else on
  torch's CPU int4 kernel (:mod:`promptcache.model.quantized`); a ``Q8_0``
  output head runs on the same kernel, its leading logits recomputed exactly
  (:mod:`promptcache.model.output_head`), any other head in float32;
  ``float16`` -- half-size copies; ``float32`` -- the exact weights.
  ``auto`` is ``int4`` when the model came from a GGUF whose layer matrices are
  Q4_0/Q4_1, else ``float16``.
* **prompt** (prefill chunks; bound by matmul throughput): ``int4`` -- every
  prompt token through the decode step's own fused layers on the GGUF blocks
  (``kernels/decode_layers.cpp``: a chunk's tokens are that call's rows, one KV
  buffer, each row attending up to its own position in a fixed order), so a
  prompt token is computed exactly as a generated one, bitwise the same however
  the prompt is cut; it needs the fused layers (``int4`` decode on the block
  kernels) and a float32 KV -- ``float32`` -- the
  exact weights -- or ``bfloat16`` (oneDNN's bfloat16 matmuls, AVX-512 BF16 /
  AMX), always over tiles of the same number of rows
  (:func:`promptcache.model.layers.tiled_linear`): oneDNN picks its kernel by
  row count, and without the tiles a hit's suffix of 1-33 tokens never matched
  the same tokens computed inside the miss's chunk, which broke hit-equals-miss
  greedy identity. ``auto`` (the local engine's) is ``int4`` where the fused
  layers run (measured on a 2-core Zen 5: 1,360 tokens 1.23x, 300 tokens 1.3x and
  40 tokens 2.5x the bfloat16 prompts' speed), else ``bfloat16`` where oneDNN
  has native bfloat16 matmuls and one tile of them measures faster than
  float32 -- once per process (:func:`bfloat16_prompts_pay`) -- else ``float32``.

Why by role and not by how many tokens a forward has: the cache guarantee. A
prompt token's keys and values are always computed by the prompt weights --
in a long miss chunk, in a short suffix after a hit, or alone (a full hit
recomputes the last prompt token) -- and every generated token by the decode
weights, so a hit and a miss compute every token the same way.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from promptcache.model.block_weights import BlockWeight
from promptcache.model.gguf_blocks import read_gguf_head, read_gguf_matrices
from promptcache.model.layers import PROMPT_TILE_ROWS, tiled_linear
from promptcache.model.output_head import Int4Head
from promptcache.model.precision_names import DECODE_PRECISIONS, PROMPT_PRECISIONS
from promptcache.model.quantized import Int4Weight, decode_head_matrix, quantized_decode_works
from promptcache.model.torch_threads import torch_threads
from promptcache.model.weights import LayerWeights, ModelWeights, cast_layer, int4_layer

__all__ = [
    "DECODE_PRECISIONS",
    "PROMPT_PRECISIONS",
    "WeightSet",
    "decode_weights",
    "prompt_weights",
]


@dataclass(frozen=True)
class WeightSet:
    """The layers and output head one role multiplies by, and what they are."""

    precision: str
    layers: list[LayerWeights]
    lm_head: torch.Tensor | Int4Head
    weight_bytes: int
    """Bytes of matmul weights one pass over every layer and the head reads."""

    @property
    def kernel(self) -> str:
        """What the matrices run on: ``gguf-blocks`` (:mod:`.block_kernels`), ``torch-int4``
        (torch's CPU int4 kernel), or the precision's name for float weights."""
        for layer in self.layers:
            for matrix in (layer.qkv_weight, layer.o_weight, layer.gate_up_weight):
                if isinstance(matrix, BlockWeight):
                    return "gguf-blocks"
                if isinstance(matrix, Int4Weight):
                    return "torch-int4"
        return self.precision

    @property
    def float_head(self) -> torch.Tensor:
        """The head as a float tensor (that of every set but ``int4``'s)."""
        if not isinstance(self.lm_head, torch.Tensor):
            raise TypeError(f"the {self.precision} head is not a float tensor")
        return self.lm_head


def exact_set(layers: list[LayerWeights], lm_head: torch.Tensor) -> WeightSet:
    return WeightSet("float32", layers, lm_head, _bytes(layers, lm_head))


def decode_weights(precision: str, weights: ModelWeights, exact: WeightSet) -> WeightSet:
    """The decode-role weights for ``precision`` (one of :data:`DECODE_PRECISIONS`)."""
    if precision not in DECODE_PRECISIONS:
        raise ValueError(
            f"decode_precision must be one of {', '.join(DECODE_PRECISIONS)}; got {precision!r}."
        )
    if precision == "auto":
        found = None if _int4_unavailable(weights) else _int4_set(weights, exact)
        return found or decode_weights("float16", weights, exact)
    if precision == "float32":
        return exact
    if precision == "float16":
        layers = [cast_layer(layer, torch.float16) for layer in exact.layers]
        lm_head = exact.float_head.to(torch.float16)
        return WeightSet("float16", layers, lm_head, _bytes(layers, lm_head))
    why = _int4_unavailable(weights)
    found = None if why else _int4_set(weights, exact)
    if found is None:
        raise ValueError(
            "decode_precision 'int4' is not available: "
            + (why or "the GGUF has no Q4_0/Q4_1 layer matrices.")
        )
    return found


def _int4_set(weights: ModelWeights, exact: WeightSet) -> WeightSet | None:
    """The int4 decode weights, or None when the GGUF has no 4-bit layer matrices.

    Packed once per GGUF file and process (a few seconds on 2 busy cores): every
    runtime over the same file -- several engines in one process, tests --
    shares the packed matrices."""
    assert weights.gguf is not None
    stat = weights.gguf.stat()
    key = (str(weights.gguf.resolve()), stat.st_size, stat.st_mtime_ns)
    with _PACKED_LOCK:
        built = _PACKED.get(key)
        if built is None:
            matrices = read_gguf_matrices(weights.gguf, weights.config)
            packed = [
                int4_layer(layer, matrices, f"model.layers.{index}.")
                for index, layer in enumerate(exact.layers)
            ]
            built = (packed, _int4_head(weights.gguf, exact.float_head))
            _PACKED.clear()  # one file at a time: a process serves one model
            _PACKED[key] = built
    packed_layers, head = built
    if not any(count for _, count in packed_layers):
        return None
    int4 = [
        replace(layer, input_norm=own.input_norm, post_norm=own.post_norm)
        for (layer, _), own in zip(packed_layers, exact.layers, strict=True)
    ]
    # Projections without 4-bit blocks (another format in the file) decode in float16.
    layers = [cast_layer(layer, torch.float16) for layer in int4]
    return WeightSet("int4", layers, head, _bytes(layers, head))


_PACKED: dict[
    tuple[str, int, int], tuple[list[tuple[LayerWeights, int]], Int4Head | torch.Tensor]
] = {}
_PACKED_LOCK = threading.Lock()


def _int4_head(gguf: Path, exact: torch.Tensor) -> Int4Head | torch.Tensor:
    """The ``Q8_0`` head of ``gguf`` on the int4 kernel, or ``exact`` for other formats.

    Like the layers, the blocks must de-quantise to exactly the weights they stand
    for (rows sampled): a head that is not the model's fails loudly here."""
    matrix = read_gguf_head(gguf)
    if matrix is None or matrix.shape != tuple(exact.shape):
        return exact
    rows = torch.arange(0, matrix.shape[0], 7)
    if not torch.equal(matrix.dequantize(rows), exact[rows].to(torch.float32)):
        raise ValueError(
            "The GGUF's Q8_0 output head does not de-quantise to the model's head; "
            "cannot decode from it."
        )
    packed = decode_head_matrix(matrix)
    return exact if packed is None else Int4Head(packed, exact)


def prompt_weights(precision: str, exact: WeightSet) -> WeightSet:
    """The prompt-role weights for ``precision`` (one of :data:`PROMPT_PRECISIONS`).

    The output head stays exact: a prefill computes one row of logits (unless all
    are asked for), and those logits start decoding."""
    if precision not in PROMPT_PRECISIONS:
        raise ValueError(
            f"prefill_precision must be one of {', '.join(PROMPT_PRECISIONS)}; got {precision!r}."
        )
    if precision == "int4":
        raise ValueError(
            "prefill_precision 'int4' runs prompts through the fused GGUF-block decode layers, "
            "which need decode_precision int4 on the block kernels (a Q4_0/Q4_1 GGUF; "
            "PROMPTCACHE_FUSED_DECODE not 0) and a float32 KV (--kv-dtype float32)."
        )
    if precision == "auto":
        precision = "bfloat16" if bfloat16_prompts_pay(exact) else "float32"
    if precision == "float32":
        return exact
    if not bfloat16_matmuls_supported():
        raise ValueError(
            "prefill_precision 'bfloat16' is not available: oneDNN has no bfloat16 "
            "matmuls on this CPU."
        )
    layers = [cast_layer(layer, torch.bfloat16) for layer in exact.layers]
    return WeightSet("bfloat16", layers, exact.lm_head, _bytes(layers, exact.float_head))


def fused_prompt_weights(decode: WeightSet, exact: WeightSet) -> WeightSet:
    """The prompt role of ``int4``: the decode layers (run fused), the exact head."""
    return WeightSet("int4", decode.layers, exact.lm_head, _bytes(decode.layers, exact.lm_head))


def bfloat16_matmuls_supported() -> bool:
    """Whether oneDNN runs bfloat16 matmuls natively on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(
            torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


_MIN_PROMPT_GAIN = 1.2
"""bfloat16 prompts must measure at least this much faster to be chosen."""


def bfloat16_prompts_pay(exact: WeightSet) -> bool:
    """Whether bfloat16 prompt matmuls are available here and faster than float32.

    Timed once per process and matrix shape (:func:`_bfloat16_tiles_faster`), so
    every engine of a process agrees: two engines that chose differently would
    compute the same prompt differently, and a hit on one would not match a miss
    on the other."""
    if not bfloat16_matmuls_supported():
        return False
    weight = max(
        (matrix for layer in exact.layers[:1] for matrix in _float_matrices(layer)),
        key=lambda matrix: matrix.numel(),
        default=None,
    )
    if weight is None:
        return False
    rows, cols = weight.shape
    with _PROMPT_CHOICE_LOCK:
        return _bfloat16_tiles_faster(int(rows), int(cols))


_PROMPT_CHOICE_LOCK = threading.Lock()


@functools.cache
def _bfloat16_tiles_faster(rows: int, cols: int, repeats: int = 5) -> bool:
    """Two tiles of prompt rows through a ``[rows, cols]`` matrix: bfloat16 tiles against
    float32, best of ``repeats``, interleaved, after a warm-up call of each (a few tens of
    milliseconds).

    On one thread: what is compared is the kernels' throughput per core. On two, the
    ratio swung from 0.4 to 1.8 between runs on an idle machine here and fell to
    0.25 while two other processes were busy (OpenMP barriers waiting for a
    descheduled thread); on one it was 2.3-4.7 idle and 1.7-1.9 loaded."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(rows, cols, generator=generator)
    half = weight.to(torch.bfloat16)
    x = torch.randn(PROMPT_TILE_ROWS * 2, cols, generator=generator)
    best = {"float32": float("inf"), "bfloat16": float("inf")}
    with torch_threads(1), torch.inference_mode():
        torch.nn.functional.linear(x, weight)
        tiled_linear(x, half, None)
        for _ in range(repeats):
            began = time.perf_counter()
            torch.nn.functional.linear(x, weight)
            best["float32"] = min(best["float32"], time.perf_counter() - began)
            began = time.perf_counter()
            tiled_linear(x, half, None)
            best["bfloat16"] = min(best["bfloat16"], time.perf_counter() - began)
    return best["float32"] >= _MIN_PROMPT_GAIN * best["bfloat16"]


def _float_matrices(layer: LayerWeights) -> list[torch.Tensor]:
    matrices = (layer.qkv_weight, layer.o_weight, layer.gate_up_weight, layer.down_weight)
    return [matrix for matrix in matrices if isinstance(matrix, torch.Tensor)]


def _int4_unavailable(weights: ModelWeights) -> str:
    """Why int4 decode cannot run for ``weights`` ('' when it can)."""
    if weights.gguf is None:
        return "the model was not loaded from a GGUF file (int4 decodes its 4-bit blocks)."
    if not quantized_decode_works():
        return "neither the GGUF block kernels nor this torch build's CPU int4 kernels work here."
    return ""


def _bytes(layers: list[LayerWeights], lm_head: torch.Tensor | Int4Head) -> int:
    if isinstance(lm_head, Int4Head):
        total = lm_head.nbytes
    else:
        total = lm_head.numel() * lm_head.element_size()
    for layer in layers:
        for matrix in (layer.qkv_weight, layer.o_weight, layer.gate_up_weight, layer.down_weight):
            if isinstance(matrix, torch.Tensor):
                total += matrix.numel() * matrix.element_size()
            else:
                total += matrix.nbytes
    return int(total)
