"""GGUF ``Q4_0``/``Q4_1``/``Q8_0`` matrices on the block kernels (:mod:`.block_kernels`).

A :class:`BlockWeight` holds a matrix as the GGUF's own values -- the nibbles
(repacked two blocks to a 32-byte load, :func:`pack_nibbles`) or the signed
bytes, and the float16 scales (and Q4_1 minimums) widened exactly to float32 --
and multiplies float32 activations by it the way llama.cpp does: each activation
block of 32 rounded to 8 bits with scale ``max|x| / 127``, exact integer block
sums, float32 scaling. ``Q4_0`` (``d * (q - 8)``) runs as ``Q4_1`` with minimum
``-8 d``, which is exact.

The weights are therefore the GGUF's exactly; what changes against float32
maths is the 8-bit rounding of the activations (at most half a step,
``max|x| / 254``, per element) and float32 summation order -- which is fixed
per output, so a row's result never depends on the rows batched with it.
"""

from __future__ import annotations

import math

import torch

from promptcache.model.gguf_blocks import BLOCK, Q8Matrix, QuantizedMatrix

__all__ = ["BlockWeight", "pack_nibbles", "rounded_activations"]


def pack_nibbles(nibbles: torch.Tensor) -> torch.Tensor:
    """uint8 ``[rows, cols]`` nibbles (0..15) in the kernels' layout, ``[rows, 32 * ceil(cols /
    64)]``: blocks in pairs, byte ``i`` of a pair holding weight ``i`` of the even block in
    its low nibble and of the odd block in its high one (one 32-byte load, two blocks)."""
    rows, cols = nibbles.shape
    blocks = nibbles.to(torch.uint8).reshape(rows, cols // BLOCK, BLOCK)
    if blocks.shape[1] % 2:  # an odd last block: zero high nibbles, which the kernel skips
        blocks = torch.cat([blocks, torch.zeros_like(blocks[:, :1])], dim=1)
    pairs = blocks.reshape(rows, -1, 2, BLOCK)
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(rows, -1).contiguous()


def rounded_activations(x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32 ``[rows, cols]``) as the kernels round it: ``d * round(x / d)`` per
    block of 32, ``d = max|x| / 127`` (for checking them, not on the hot path)."""
    rows, cols = x.shape
    blocks = x.to(torch.float32).reshape(rows, cols // BLOCK, BLOCK)
    d = blocks.abs().amax(-1, keepdim=True) / 127.0
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return (torch.round(blocks / safe) * d).reshape(rows, cols)


class BlockWeight:
    """A ``[out_features, in_features]`` GGUF matrix for the block kernels."""

    def __init__(
        self,
        *,
        data: torch.Tensor,
        scales: torch.Tensor,
        minimums: torch.Tensor | None,
    ) -> None:
        self.data = data
        """uint8 nibble pairs ``[out, 32 * ceil(in / 64)]`` (Q4) or int8 values ``[out, in]``."""
        self.scales = scales
        """``d``, float32 ``[out, in / 32]`` (the GGUF's float16 values, widened exactly)."""
        self.minimums = minimums
        """``m``, float32 ``[out, in / 32]`` (Q4 only)."""
        self.out_features = int(scales.shape[0])
        self.in_features = int(scales.shape[1]) * BLOCK

    @staticmethod
    def fits(rows: int, cols: int) -> bool:
        """Whether a ``[rows, cols]`` matrix fits the kernels (whole blocks of 32)."""
        return rows > 0 and cols > 0 and cols % BLOCK == 0

    @classmethod
    def of(cls, matrix: QuantizedMatrix) -> BlockWeight:
        """``matrix``'s Q4_0/Q4_1 blocks as they are."""
        scales = matrix.scales.to(torch.float32).contiguous()  # float16 -> float32: exact
        # Q4_0's d * (q - 8) is Q4_1's d * q + m with m = -8 d: exact.
        minimums = -8.0 * scales if matrix.minimums is None else matrix.minimums
        return cls(
            data=pack_nibbles(matrix.nibbles),
            scales=scales,
            minimums=minimums.to(torch.float32).contiguous(),
        )

    @classmethod
    def of_q8_0(cls, matrix: Q8Matrix) -> BlockWeight:
        """``matrix``'s Q8_0 blocks as they are."""
        return cls(
            data=matrix.values.to(torch.int8).contiguous(),
            scales=matrix.scales.to(torch.float32).contiguous(),
            minimums=None,
        )

    @property
    def nbytes(self) -> int:
        """Bytes one pass over the matrix reads."""
        tensors = [self.data, self.scales] + ([] if self.minimums is None else [self.minimums])
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` for ``x`` ``[rows, in_features]`` of any float dtype; float32 out."""
        x = x.to(torch.float32).contiguous()
        if self.minimums is None:
            out: torch.Tensor = torch.ops.promptcache_blocks.q8_0_linear(x, self.data, self.scales)
        else:
            out = torch.ops.promptcache_blocks.q4_1_linear(x, self.data, self.scales, self.minimums)
        return out

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``F.linear(x, W, bias)``, the result in ``x``'s dtype."""
        out = self.matmul(x).to(x.dtype)
        return out if bias is None else out + bias.to(out.dtype)

    def decode_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` (float32), for decode steps."""
        return self.matmul(x)

    def dequantize(self) -> torch.Tensor:
        """The float32 weights (exactly the GGUF's ``d * q + m`` / ``d * q``)."""
        d = self.scales.repeat_interleave(BLOCK, 1)
        if self.minimums is None:
            return self.data.to(torch.float32) * d
        rows = self.out_features
        pairs = self.data.view(rows, -1, BLOCK)
        nibbles = torch.stack([pairs & 0x0F, pairs >> 4], dim=2).reshape(rows, -1)
        nibbles = nibbles[:, : self.in_features]
        return nibbles.to(torch.float32) * d + self.minimums.repeat_interleave(BLOCK, 1)

    def logit_bounds(self, x: torch.Tensor) -> tuple[float, float]:
        """``(a, r)``: a logit of row ``w`` is within ``a |w| + r |logit|`` of the exact one
        for the activations ``x`` (one row). The weights are exact, so the error is
        ``w . (x - rounded(x))``, at most ``|w|`` times half a step per element
        (Cauchy-Schwarz), a little over for the rounding of ``x / d``; plus the float32
        sums' rounding (a few dozen roundings of 2^-24 of at most ``|w| |x|``)."""
        blocks = x.to(torch.float32).reshape(-1, BLOCK)
        steps = blocks.abs().amax(-1) / 127.0
        rounding = 0.5 * (1 + 2**-10) * math.sqrt(BLOCK) * float(torch.linalg.vector_norm(steps))
        return rounding + 2**-16 * (float(torch.linalg.vector_norm(x)) + rounding), 0.0
