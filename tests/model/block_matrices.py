"""Random GGUF block matrices for the kernel tests: Q4_0/Q4_1 and Q8_0, seeded."""

from __future__ import annotations

import torch

from promptcache.model.gguf_blocks import Q8Matrix, QuantizedMatrix


def q4(kind: str, rows: int, blocks: int, seed: int = 0) -> QuantizedMatrix:
    generator = torch.Generator().manual_seed(seed)
    cols = 32 * blocks
    scales = (torch.rand(rows, blocks, generator=generator) * 0.02 + 1e-3).half()
    minimums = None
    if kind == "Q4_1":
        minimums = (-8 * scales.float() * torch.rand(rows, blocks, generator=generator)).half()
    nibbles = torch.randint(0, 16, (rows, cols), dtype=torch.uint8, generator=generator)
    return QuantizedMatrix(kind, nibbles, scales, minimums)


def q8(rows: int, blocks: int, seed: int = 0) -> Q8Matrix:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(-128, 128, (rows, 32 * blocks), dtype=torch.int8, generator=generator)
    return Q8Matrix(values, (torch.rand(rows, blocks, generator=generator) * 0.01 + 1e-4).half())
