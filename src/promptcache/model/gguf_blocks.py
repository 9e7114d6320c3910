"""The 4-bit matrices of a GGUF file, read as its blocks: no de-quantised copy.

A GGUF stores each weight matrix row by row in blocks of 32 weights. The two
4-bit formats that PyTorch's CPU int4 kernels can run as they are
(:mod:`promptcache.model.quantized`):

* ``Q4_0`` -- 18 bytes: a float16 scale ``d``, then 16 bytes of nibbles;
  ``w = d * (q - 8)``;
* ``Q4_1`` -- 20 bytes: float16 ``d`` and minimum ``m``, then 16 bytes of
  nibbles; ``w = d * q + m``.

In both, byte ``j`` of a block holds weight ``j`` in its low nibble and weight
``j + 16`` in its high one (ggml's ``dequantize_row_q4_*``). The output head
is read as well when it is ``Q8_0`` (34 bytes: float16 ``d``, then 32 signed
bytes ``q``; ``w = d * q``), the usual format of a GGUF's token embedding, which
the int4 kernel runs as two nibble planes (:meth:`~promptcache.model.quantized.
Int4Weight.of_q8_0`). Other formats (the k-quants, float) are not read here:
their matrices keep the float path.

:func:`read_gguf_matrices` maps llama.cpp's tensor names onto Hugging Face's
and undoes the row permutation llama.cpp's converter applies to the query and
key projections (the same one transformers undoes when it de-quantises), so a
matrix here de-quantises to exactly the float32 tensor of the converted model
-- which the runtime checks before it uses one.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "BLOCK",
    "QUANTIZED_FORMATS",
    "Q8Matrix",
    "QuantizedMatrix",
    "read_gguf_head",
    "read_gguf_matrices",
]

BLOCK = 32
"""Weights per GGUF block (the int4 kernels' group size)."""
QUANTIZED_FORMATS = ("Q4_0", "Q4_1")
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
_HF_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


@dataclass(frozen=True)
class QuantizedMatrix:
    """A ``[rows, cols]`` weight matrix as its GGUF blocks.

    ``nibbles``: uint8 ``[rows, cols]``, each 0..15; ``scales`` (``d``) and
    ``minimums`` (``m``, Q4_1 only): float16 ``[rows, cols / 32]``.
    """

    format: str
    nibbles: torch.Tensor
    scales: torch.Tensor
    minimums: torch.Tensor | None

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.nibbles.shape
        return int(rows), int(cols)

    def dequantize(self) -> torch.Tensor:
        """The float32 weights, computed as ggml (and gguf-py) do: ``d * q + m``,
        or ``d * (q - 8)``."""
        rows, cols = self.shape
        q = self.nibbles.view(rows, cols // BLOCK, BLOCK).to(torch.float32)
        d = self.scales.to(torch.float32)[..., None]
        if self.minimums is None:
            return (d * (q - 8.0)).view(rows, cols)
        return (d * q + self.minimums.to(torch.float32)[..., None]).view(rows, cols)

    def take_rows(self, index: torch.Tensor) -> QuantizedMatrix:
        """The matrix with its rows in ``index`` order (blocks run along rows)."""
        minimums = None if self.minimums is None else self.minimums[index]
        return QuantizedMatrix(self.format, self.nibbles[index], self.scales[index], minimums)

    @staticmethod
    def stack(parts: list[QuantizedMatrix]) -> QuantizedMatrix:
        """``parts`` one above the other (fused projections), all of one format."""
        formats = {part.format for part in parts}
        if len(formats) != 1:
            raise ValueError(f"cannot fuse matrices of formats {sorted(formats)}")
        minimums = [part.minimums for part in parts]
        present = [m for m in minimums if m is not None]
        return QuantizedMatrix(
            parts[0].format,
            torch.cat([part.nibbles for part in parts]),
            torch.cat([part.scales for part in parts]),
            torch.cat(present) if len(present) == len(parts) else None,
        )


@dataclass(frozen=True)
class Q8Matrix:
    """A ``[rows, cols]`` ``Q8_0`` matrix as its GGUF blocks: int8 ``values`` ``[rows,
    cols]`` and float16 ``scales`` (``d``) ``[rows, cols / 32]``."""

    values: torch.Tensor
    scales: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = self.values.shape
        return int(rows), int(cols)

    def dequantize(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The float32 weights ``d * q`` (of ``rows`` only, when given), as ggml computes them."""
        values = self.values if rows is None else self.values[rows]
        scales = self.scales if rows is None else self.scales[rows]
        count, cols = values.shape
        q = values.view(count, cols // BLOCK, BLOCK).to(torch.float32)
        return (scales.to(torch.float32)[..., None] * q).view(count, cols)


def read_gguf_head(path: Path) -> Q8Matrix | None:
    """The output head of the GGUF at ``path`` when it is ``Q8_0``: ``output.weight``, or the
    token embedding a model with tied embeddings multiplies by; None for other formats."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    infos = {name: (kind, shape, offset) for name, kind, shape, offset in _tensor_infos(data)}
    found = infos.get("output.weight") or infos.get("token_embd.weight")
    if found is None or found[0] != "Q8_0":
        return None
    _, (cols, rows), offset = found
    blocks = np.ascontiguousarray(data[offset : offset + rows * cols // BLOCK * 34])
    blocks = blocks.reshape(rows, cols // BLOCK, 34)
    scales = torch.from_numpy(blocks[..., 0:2].copy().view(np.float16)[..., 0])
    values = torch.from_numpy(blocks[..., 2:].copy().view(np.int8).reshape(rows, cols))
    return Q8Matrix(values, scales)


def read_gguf_matrices(path: Path, config: Any) -> dict[str, QuantizedMatrix]:
    """The Q4_0/Q4_1 layer matrices of the GGUF at ``path``, by Hugging Face parameter
    name (``model.layers.0.self_attn.q_proj.weight`` ...); ``config``: the model's
    (heads, for the query/key row order). Other tensors are left out."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    matrices: dict[str, QuantizedMatrix] = {}
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for name, kind, shape, offset in _tensor_infos(data):
        found = _LAYER_TENSOR.fullmatch(name)
        if found is None or found.group(2) not in _HF_NAMES or kind not in QUANTIZED_FORMATS:
            continue
        cols, rows = shape  # ggml lists dims innermost first
        size = rows * cols // BLOCK * _BLOCK_BYTES[kind]
        matrix = _unpack(kind, data[offset : offset + size], rows)
        role = found.group(2)
        if role in ("attn_q", "attn_k"):
            order = _unpermuted_rows(rows, heads if role == "attn_q" else kv_heads)
            matrix = matrix.take_rows(order)
        matrices[f"model.layers.{found.group(1)}.{_HF_NAMES[role]}.weight"] = matrix
    return matrices


_GGML_TYPES = {2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}
"""ggml type ids of the formats read here (others are skipped by id)."""
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""Sizes of GGUF metadata value types (8 is a string, 9 an array)."""


def _tensor_infos(data: np.ndarray[Any, Any]) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, format, dims, absolute data offset) of each tensor of a GGUF file.

    A direct walk over the header: gguf-py's reader also decodes every metadata
    value (~100k tokenizer strings), which takes seconds; here they are skipped.
    """
    view = memoryview(data)  # type: ignore[arg-type]
    if bytes(view[:4]) != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    version, tensors, fields = struct.unpack_from("<IQQ", view, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} is not supported (2 or later)")
    at = 24
    alignment = 32

    def string(at: int) -> tuple[str, int]:
        (length,) = struct.unpack_from("<Q", view, at)
        return bytes(view[at + 8 : at + 8 + length]).decode("utf-8", "replace"), at + 8 + length

    def skip(kind: int, at: int) -> int:
        if kind == 8:
            length: int = struct.unpack_from("<Q", view, at)[0]
            return at + 8 + length
        if kind == 9:
            item, count = struct.unpack_from("<IQ", view, at)
            at += 12
            if item in _SCALAR_BYTES:
                return at + int(count) * _SCALAR_BYTES[item]
            for _ in range(count):
                at = skip(item, at)
            return at
        return at + _SCALAR_BYTES[kind]

    for _ in range(fields):
        key, at = string(at)
        (kind,) = struct.unpack_from("<I", view, at)
        at += 4
        if key == "general.alignment" and kind == 4:
            (alignment,) = struct.unpack_from("<I", view, at)
        at = skip(kind, at)
    infos: list[tuple[str, str, tuple[int, ...], int]] = []
    for _ in range(tensors):
        name, at = string(at)
        (dims,) = struct.unpack_from("<I", view, at)
        shape = struct.unpack_from(f"<{dims}Q", view, at + 4)
        kind, offset = struct.unpack_from("<IQ", view, at + 4 + 8 * dims)
        at += 4 + 8 * dims + 12
        infos.append((name, _GGML_TYPES.get(kind, f"ggml type {kind}"), shape, offset))
    start = -(-at // alignment) * alignment
    return [(name, kind, shape, start + offset) for name, kind, shape, offset in infos]


def _unpack(kind: str, data: np.ndarray[Any, Any], rows: int) -> QuantizedMatrix:
    """The blocks of a ``[rows, bytes per row]`` uint8 array of format ``kind``."""
    size = _BLOCK_BYTES[kind]
    blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(rows, -1, size)
    scales = torch.from_numpy(blocks[..., 0:2].copy().view(np.float16)[..., 0])
    minimums = None
    if kind == "Q4_1":
        minimums = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0])
    packed = blocks[..., size - BLOCK // 2 :]
    nibbles = np.empty((rows, blocks.shape[1], BLOCK), dtype=np.uint8)
    np.bitwise_and(packed, 0x0F, out=nibbles[..., : BLOCK // 2])  # weight j
    np.right_shift(packed, 4, out=nibbles[..., BLOCK // 2 :])  # weight j + 16
    return QuantizedMatrix(kind, torch.from_numpy(nibbles.reshape(rows, -1)), scales, minimums)


def _unpermuted_rows(rows: int, heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's query/key permutation (as transformers does:
    per head, rows ``[dim, 2]`` -> ``[2, dim]``)."""
    dim = rows // heads // 2
    return torch.arange(rows).reshape(heads, dim, 2).transpose(1, 2).reshape(rows)
