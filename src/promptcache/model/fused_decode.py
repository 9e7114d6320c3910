"""A decode step's decoder layers in one C++ call (``kernels/decode_layers.cpp``).

Where every decode matrix of every layer is GGUF blocks and the residual stream is
float32, :func:`fused_decode_layers` binds the layers' tensors once, and
:class:`~promptcache.model.runtime.LlamaRuntime` runs each decode step's layers as
one call instead of ~25 torch operations a layer from Python (the C++ file says
what that cost and how its numbers relate to :meth:`LayerMath.decode_rows
<promptcache.model.layers.LayerMath.decode_rows>`). ``PROMPTCACHE_FUSED_DECODE=0``
keeps the Python layers, to compare the two.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from promptcache.model.architecture import Architecture
from promptcache.model.block_kernels import block_kernels
from promptcache.model.block_weights import BlockWeight
from promptcache.model.weights import LayerWeights

__all__ = ["fused_decode_layers"]


def fused_decode_layers(
    layers: Sequence[LayerWeights], arch: Architecture, dtype: torch.dtype
) -> Any | None:
    """The layers bound for ``DecodeLayers.forward(x, buffers, positions, cos, sin)``, or
    None where they cannot be fused (a float or torch-int4 matrix, a 16-bit residual
    stream, no block kernels, or ``PROMPTCACHE_FUSED_DECODE=0``)."""
    if os.environ.get("PROMPTCACHE_FUSED_DECODE", "1").strip() == "0":
        return None
    if dtype != torch.float32 or not layers or not block_kernels():
        return None
    tensors: list[torch.Tensor | None] = []
    for layer in layers:
        projections = (
            (layer.qkv_weight, layer.qkv_bias),
            (layer.o_weight, layer.o_bias),
            (layer.gate_up_weight, layer.gate_up_bias),
            (layer.down_weight, layer.down_bias),
        )
        tensors += [layer.input_norm, layer.post_norm]
        for matrix, bias in projections:
            if not isinstance(matrix, BlockWeight):
                return None
            tensors += [matrix.data, matrix.scales, matrix.minimums, bias]
    return torch.classes.promptcache_blocks.DecodeLayers(
        tensors,
        arch.hidden,
        arch.num_heads,
        arch.num_kv_heads,
        arch.head_dim,
        arch.intermediate,
        arch.eps,
        arch.head_dim**-0.5,
    )
