"""GGUF ``Q4_0``/``Q4_1``/``Q8_0`` matrices on the block kernels (:mod:`.block_kernels`).

A :class:`BlockWeight` holds a matrix as the GGUF's own values -- the nibbles or
the signed bytes, and the float16 scales (and Q4_1 minimums) -- in the kernels'
order, tiles of 8 rows (:func:`tile_q4`, :func:`tile_q8`, :func:`tile_scales`;
``kernels/block_dot.cpp`` says why), and multiplies float32 activations by it the
way llama.cpp does: each activation block of 32 rounded to 8 bits with scale
``max|x| / 127``, exact integer block sums, float32 scaling. ``Q4_0`` (``d * (q -
8)``) runs as ``Q4_1`` with minimum ``-8 d``, which is exact (in float16 too).

The weights are therefore the GGUF's exactly; what changes against float32
maths is the 8-bit rounding of the activations (at most half a step,
``max|x| / 254``, per element) and float32 summation order -- which is fixed
per output, so a row's result never depends on the rows batched with it.
"""

from __future__ import annotations

import math

import torch

from promptcache.model.gguf_blocks import BLOCK, Q8Matrix, QuantizedMatrix

__all__ = ["TILE", "BlockWeight", "rounded_activations", "tile_q4", "tile_q8", "tile_scales"]

TILE = 8
"""Rows a tile interleaves: the 8 float32 lanes of an AVX2 register, one row each."""


def _tiled_rows(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` ``[rows, ...]`` as ``[tiles, 8, ...]``, the last tile padded with zeros
    (zero weights, scales and minimums: the kernels compute those rows and drop them)."""
    rows = matrix.shape[0]
    tiles = -(-rows // TILE)
    padded = matrix.new_zeros((tiles * TILE, *matrix.shape[1:]))
    padded[:rows] = matrix
    return padded.view(tiles, TILE, *matrix.shape[1:])


def tile_q4(nibbles: torch.Tensor) -> torch.Tensor:
    """uint8 ``[rows, cols]`` nibbles (0..15) in the kernels' layout, ``[tiles, cols / 32,
    128]``: a tile's block is 4 loads of 32 bytes; byte ``4 i + j`` of load ``k`` holds
    row ``i``'s weight ``4 k + j`` in its low nibble and weight ``16 + 4 k + j`` in its high
    one (the groups of 4 that one maddubs / vpdpbusd lane sums)."""
    rows, cols = nibbles.shape
    q = _tiled_rows(nibbles.to(torch.uint8).reshape(rows, cols // BLOCK, BLOCK))
    packed = q[..., :16] | (q[..., 16:] << 4)  # [tiles, row, block, 16]
    tiles, blocks = packed.shape[0], packed.shape[2]
    grouped = packed.view(tiles, TILE, blocks, 4, 4).permute(0, 2, 3, 1, 4)
    return grouped.reshape(tiles, blocks, TILE * 16).contiguous()


def tile_q8(values: torch.Tensor) -> torch.Tensor:
    """int8 ``[rows, cols]`` in the kernels' layout, ``[tiles, cols / 32, 256]``: byte
    ``4 i + j`` of a block's load ``k`` (of 8) is row ``i``'s weight ``4 k + j``."""
    rows, cols = values.shape
    q = _tiled_rows(values.to(torch.int8).reshape(rows, cols // BLOCK, BLOCK))
    tiles, blocks = q.shape[0], q.shape[2]
    grouped = q.view(tiles, TILE, blocks, 8, 4).permute(0, 2, 3, 1, 4)
    return grouped.reshape(tiles, blocks, TILE * BLOCK).contiguous()


def tile_scales(scales: torch.Tensor) -> torch.Tensor:
    """float16 ``[rows, cols / 32]`` (scales or minimums) as ``[tiles, cols / 32, 8]``."""
    return _tiled_rows(scales.to(torch.float16)).permute(0, 2, 1).contiguous()


def _untiled(tiled: torch.Tensor, rows: int) -> torch.Tensor:
    """``[tiles, blocks, 8]`` back to ``[rows, blocks]``."""
    return tiled.permute(0, 2, 1).reshape(-1, tiled.shape[1])[:rows]


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
        out_features: int,
    ) -> None:
        self.data = data
        """uint8 nibbles ``[tiles, in / 32, 128]`` (Q4) or int8 values ``[tiles, in / 32,
        256]`` (:func:`tile_q4`, :func:`tile_q8`)."""
        self.scales = scales
        """``d``, float16 ``[tiles, in / 32, 8]`` (the GGUF's values, :func:`tile_scales`)."""
        self.minimums = minimums
        """``m``, float16 ``[tiles, in / 32, 8]`` (Q4 only)."""
        self.out_features = out_features
        self.in_features = int(scales.shape[1]) * BLOCK

    @staticmethod
    def fits(rows: int, cols: int) -> bool:
        """Whether a ``[rows, cols]`` matrix fits the kernels (whole blocks of 32)."""
        return rows > 0 and cols > 0 and cols % BLOCK == 0

    @classmethod
    def of(cls, matrix: QuantizedMatrix) -> BlockWeight:
        """``matrix``'s Q4_0/Q4_1 blocks as they are."""
        scales = matrix.scales.to(torch.float16)
        # Q4_0's d * (q - 8) is Q4_1's d * q + m with m = -8 d: exact, a power of two
        # (float16 overflows only past |d| = 8188, a weight of 65,000).
        minimums = -8.0 * scales if matrix.minimums is None else matrix.minimums.to(torch.float16)
        if not bool(torch.isfinite(minimums).all()):
            raise ValueError("a Q4_0 scale is too large for its minimum to be a float16")
        return cls(
            data=tile_q4(matrix.nibbles),
            scales=tile_scales(scales),
            minimums=tile_scales(minimums),
            out_features=matrix.shape[0],
        )

    @classmethod
    def of_q8_0(cls, matrix: Q8Matrix) -> BlockWeight:
        """``matrix``'s Q8_0 blocks as they are."""
        return cls(
            data=tile_q8(matrix.values),
            scales=tile_scales(matrix.scales),
            minimums=None,
            out_features=matrix.shape[0],
        )

    @property
    def nbytes(self) -> int:
        """Bytes one pass over the matrix reads."""
        tensors = [self.data, self.scales] + ([] if self.minimums is None else [self.minimums])
        return int(sum(t.numel() * t.element_size() for t in tensors))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` for ``x`` ``[rows, in_features]`` of any float dtype; float32 out."""
        x = x.to(torch.float32).contiguous()
        ops = torch.ops.promptcache_blocks
        if self.minimums is None:
            out: torch.Tensor = ops.q8_0_linear(x, self.data, self.scales, self.out_features)
        else:
            out = ops.q4_1_linear(x, self.data, self.scales, self.minimums, self.out_features)
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
        rows, cols = self.out_features, self.in_features
        blocks = cols // BLOCK
        d = _untiled(self.scales, rows).to(torch.float32).repeat_interleave(BLOCK, 1)
        if self.minimums is None:
            grouped = self.data.view(-1, blocks, 8, TILE, 4).permute(0, 3, 1, 2, 4)
            return grouped.reshape(-1, cols)[:rows].to(torch.float32) * d
        grouped = self.data.view(-1, blocks, 4, TILE, 4).permute(0, 3, 1, 2, 4)
        packed = grouped.reshape(-1, blocks, 16)  # [row, block, 16]: weights j | 16 + j
        nibbles = torch.cat([packed & 0x0F, packed >> 4], dim=2).reshape(-1, cols)[:rows]
        minimums = _untiled(self.minimums, rows).to(torch.float32).repeat_interleave(BLOCK, 1)
        return nibbles.to(torch.float32) * d + minimums

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
