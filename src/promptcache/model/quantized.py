"""Decoding straight from a GGUF's 4-bit blocks: which kernel, and PyTorch's CPU int4 one.

:func:`decode_matrix` / :func:`decode_head_matrix` put a matrix on the GGUF block
kernels (:mod:`promptcache.model.block_kernels`) where they run, and on PyTorch's
int4 kernel, described here, otherwise.

A decode step of a small model on a CPU is bound by the bytes of weights it
reads. The float16 copies of the de-quantised GGUF read 2 bytes per weight; the
GGUF's own Q4_0/Q4_1 blocks read 4.5-5 bits. PyTorch ships a CPU kernel for
exactly this shape of data -- ``_weight_int4pack_mm_for_cpu``, group-wise 4-bit
weights with a scale and an offset per group of ``group_size`` weights along
the input dimension -- and a GGUF block is such a group (32 weights).

How faithful the mapping is, from the kernel's source
(``aten/src/ATen/native/cpu/int4mm_kernel.cpp``):

* the kernel de-quantises ``w = (q - 8) * scale + zero`` (q the unsigned nibble),
  so Q4_1's ``w = d * q + m`` is ``scale = d``, ``zero = m + 8 d``, and Q4_0's
  ``w = d * (q - 8)`` is ``scale = d``, ``zero = 0``. The nibbles are the
  GGUF's, unchanged;
* its vectorised (AVX-512/AVX2) form exists for bfloat16 only: activations,
  scales, offsets and outputs are bfloat16 (the float16/float32 forms are a
  plain scalar loop). So ``d`` and ``m + 8 d`` are rounded from
  float16 to bfloat16 (8 significant bits instead of 11): measured on
  SmolLM2-135M Q4_1 (layers 0, 15, 29), a 0.25% RMS relative change of the weights, plus the
  rounding of activations and outputs to bfloat16 -- comparable to llama.cpp
  itself, which rounds activations to 8-bit blocks for these dot products.
  ``benchmarks/quantized_accuracy.py`` measures the effect on output;
* products accumulate in float32, over the input dimension in one fixed order
  per output row: a row's result does not depend on the other rows of the
  batch (checked by ``tests/model/test_quantized.py``), so batching decode
  steps never changes a sequence's tokens.

A ``Q8_0`` matrix (the output head, usually) runs on the same kernel as two
nibble planes (:meth:`Int4Weight.of_q8_0`): a signed byte ``q`` is ``16 * hi +
lo`` with ``hi`` in -8..7 and ``lo`` in 0..15, so ``d * q`` is the sum of a plane
of ``hi + 8`` nibbles with ``scale = 16 d, zero = 0`` and a plane of ``lo``
nibbles with ``scale = d, zero = 8 d``, and ``x @ W.T`` is ``[x, x] @ [HI, LO].T``.
Every product is exact in float32 but ``d``, rounded to bfloat16 as above. It
reads 5 bits per weight where the float32 head read 32: measured here for
SmolLM2-135M's ``[49152, 576]`` head, 2.9 ms a step instead of 5.6 ms (bfloat16
through oneDNN also took 5.6 ms: its one-row path is compute-bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptcache.model.block_kernels import block_kernels
from promptcache.model.block_weights import BlockWeight
from promptcache.model.gguf_blocks import BLOCK, Q8Matrix, QuantizedMatrix

__all__ = [
    "QUANTIZED_MATRICES",
    "Int4Weight",
    "QuantizedWeight",
    "decode_head_matrix",
    "decode_matrix",
    "int4_kernels_work",
    "quantized_decode_works",
]

_BFLOAT16_ACTIVATION_BOUND = 2.0**-7
_ROW_MULTIPLE = 16
"""The kernel packs output rows in tiles of 16, 32, 48 or 64."""


@dataclass(frozen=True)
class Int4Weight:
    """A ``[out_features, in_features]`` matrix packed for the CPU int4 kernel."""

    packed: torch.Tensor
    """uint8, the layout ``_convert_weight_to_int4pack_for_cpu`` makes."""
    scales_and_zeros: torch.Tensor
    """bfloat16 ``[in_features / 32, out_features, 2]``: (scale, zero) per group."""
    out_features: int
    in_features: int
    planes: int = 1
    """1, or 2 for a ``Q8_0`` matrix: the input is repeated once per nibble plane."""

    @staticmethod
    def fits(rows: int, cols: int) -> bool:
        """Whether a ``[rows, cols]`` matrix fits the kernel's tiles."""
        return rows % _ROW_MULTIPLE == 0 and cols % BLOCK == 0

    @classmethod
    def of(cls, matrix: QuantizedMatrix) -> Int4Weight:
        """``matrix``'s blocks, packed (nibbles as they are; scales to bfloat16)."""
        rows, cols = matrix.shape
        _check_tiles(rows, cols)
        scales = matrix.scales.to(torch.float32)
        zeros = (
            torch.zeros_like(scales)
            if matrix.minimums is None
            else matrix.minimums.to(torch.float32) + 8.0 * scales
        )
        return cls._packed(matrix.nibbles, scales, zeros, rows, cols, planes=1)

    @classmethod
    def of_q8_0(cls, matrix: Q8Matrix) -> Int4Weight:
        """``matrix``'s signed bytes as two nibble planes (see the module docs)."""
        rows, cols = matrix.shape
        _check_tiles(rows, cols)
        values = matrix.values.to(torch.int16)
        high, low = (values >> 4) + 8, values & 0x0F  # q = 16 * (high - 8) + low
        # Rounded to bfloat16 once, so 16 d and 8 d are that value times a power of two.
        d = matrix.scales.to(torch.bfloat16).to(torch.float32)
        scales = torch.cat([16.0 * d, d], dim=1)
        zeros = torch.cat([torch.zeros_like(d), 8.0 * d], dim=1)
        nibbles = torch.cat([high, low], dim=1).to(torch.uint8)
        return cls._packed(nibbles, scales, zeros, rows, cols, planes=2)

    @classmethod
    def _packed(
        cls,
        nibbles: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
        rows: int,
        cols: int,
        *,
        planes: int,
    ) -> Int4Weight:
        pairs = torch.stack([scales.T, zeros.T], dim=-1).to(torch.bfloat16).contiguous()
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles.to(torch.int32), 1)
        return cls(
            packed=packed,
            scales_and_zeros=pairs,
            out_features=rows,
            in_features=cols,
            planes=planes,
        )

    @property
    def nbytes(self) -> int:
        """Bytes one pass over the matrix reads."""
        return int(
            self.packed.numel() * self.packed.element_size()
            + self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()
        )

    def dequantize(self) -> torch.Tensor:
        """The float32 weights this kernel multiplies by (for measuring, not for maths)."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        return self.matmul(eye).to(torch.float32).T.contiguous()

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` for bfloat16 ``x`` ``[rows, in_features]``; bfloat16 out."""
        if self.planes == 2:
            x = torch.cat((x, x), dim=-1)
        out: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, self.packed, BLOCK, self.scales_and_zeros
        )
        return out

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``F.linear(x, W, bias)`` for ``x`` of any float dtype, the result in ``x``'s."""
        out = self.matmul(x.to(torch.bfloat16).contiguous()).to(x.dtype)
        return out if bias is None else out + bias.to(out.dtype)

    def decode_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` in the kernel's own output precision (bfloat16), for decode steps."""
        return self.matmul(x.to(torch.bfloat16))

    def logit_bounds(self, x: torch.Tensor) -> tuple[float, float]:
        """``(a, r)``: a coarse logit of row ``w`` is within ``a |w| + r |logit|`` of the exact
        one for the activations ``x`` (one row). ``x`` and the weights rounded to bfloat16
        (2^-9 each), then the result (2^-9 of itself): ``2^-8 |x| |w|`` by Cauchy-Schwarz,
        doubled for the float32 sums."""
        return _BFLOAT16_ACTIVATION_BOUND * float(torch.linalg.vector_norm(x)), 2.0**-8


def _check_tiles(rows: int, cols: int) -> None:
    if not Int4Weight.fits(rows, cols):
        raise ValueError(
            f"a [{rows}, {cols}] matrix does not fit the int4 kernel "
            f"(rows a multiple of {_ROW_MULTIPLE}, columns of {BLOCK})"
        )


def int4_kernels_work() -> bool:
    """Whether this torch has the CPU int4 kernels and they compute what they should
    (a tiny Q4_1 matrix against its float32 de-quantisation)."""
    generator = torch.Generator().manual_seed(0)
    rows, cols = 16, 2 * BLOCK
    matrix = QuantizedMatrix(
        "Q4_1",
        torch.randint(0, 16, (rows, cols), dtype=torch.uint8, generator=generator),
        torch.full((rows, cols // BLOCK), 0.125, dtype=torch.float16),
        torch.full((rows, cols // BLOCK), -1.0, dtype=torch.float16),
    )
    x = torch.randn(3, cols, generator=generator)
    try:
        with torch.inference_mode():
            got = Int4Weight.of(matrix).linear(x, None)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    want = x.to(torch.bfloat16).to(torch.float32) @ matrix.dequantize().T
    return bool(torch.allclose(got, want, rtol=2e-2, atol=2e-2))


QuantizedWeight = Int4Weight | BlockWeight
"""A GGUF matrix packed for a decode kernel: the block kernels' or torch's int4 one."""
QUANTIZED_MATRICES = (Int4Weight, BlockWeight)


def decode_matrix(matrix: QuantizedMatrix) -> QuantizedWeight:
    """``matrix`` for int4 decode: on the block kernels where they run, else torch's int4
    kernel (which raises ``ValueError`` for a shape it cannot tile)."""
    if block_kernels() and BlockWeight.fits(*matrix.shape):
        return BlockWeight.of(matrix)
    return Int4Weight.of(matrix)


def decode_head_matrix(matrix: Q8Matrix) -> QuantizedWeight | None:
    """A ``Q8_0`` head for int4 decode, or None where no kernel fits its shape."""
    if block_kernels() and BlockWeight.fits(*matrix.shape):
        return BlockWeight.of_q8_0(matrix)
    if Int4Weight.fits(*matrix.shape):
        return Int4Weight.of_q8_0(matrix)
    return None


def quantized_decode_works() -> bool:
    """Whether some kernel here decodes from GGUF blocks: the block kernels or torch's."""
    return block_kernels() or int4_kernels_work()
