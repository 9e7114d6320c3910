"""Reading a Llama-family Hugging Face model's weights into the runtime's layout.

:func:`fused_layer` concatenates each layer's q/k/v and gate/up projections
into one matrix each (one matmul instead of three or two per step) and
re-points the HF modules at slices of the fused tensors, so the model keeps
working and no weight is held twice. :func:`cast_layer` makes reduced-precision
copies for the optional fast decode path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer's tensors, projections fused."""

    input_norm: torch.Tensor
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor | None
    o_weight: torch.Tensor
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up_weight: torch.Tensor
    gate_up_bias: torch.Tensor | None
    down_weight: torch.Tensor
    down_bias: torch.Tensor | None


def fused_layer(layer: torch.nn.Module) -> LayerWeights:
    """The fused weights of one ``LlamaDecoderLayer``-shaped module."""
    attn, mlp = child_module(layer, "self_attn"), child_module(layer, "mlp")
    q_proj, k_proj, v_proj = (child_module(attn, n) for n in ("q_proj", "k_proj", "v_proj"))
    gate_proj, up_proj = child_module(mlp, "gate_proj"), child_module(mlp, "up_proj")
    o_proj, down_proj = child_module(attn, "o_proj"), child_module(mlp, "down_proj")
    qkv_weight = _fuse_into(q_proj, k_proj, v_proj, name="weight")
    qkv_bias = _fuse_into(q_proj, k_proj, v_proj, name="bias")
    gate_up_weight = _fuse_into(gate_proj, up_proj, name="weight")
    gate_up_bias = _fuse_into(gate_proj, up_proj, name="bias")
    if qkv_weight is None or gate_up_weight is None:
        raise ValueError("Attention or MLP projections have no weight; cannot build the runtime.")
    return LayerWeights(
        input_norm=module_weight(layer, "input_layernorm"),
        qkv_weight=qkv_weight,
        qkv_bias=qkv_bias,
        o_weight=_required(o_proj, "weight"),
        o_bias=_param(o_proj, "bias"),
        post_norm=module_weight(layer, "post_attention_layernorm"),
        gate_up_weight=gate_up_weight,
        gate_up_bias=gate_up_bias,
        down_weight=_required(down_proj, "weight"),
        down_bias=_param(down_proj, "bias"),
    )


def cast_layer(layer: LayerWeights, dtype: torch.dtype) -> LayerWeights:
    """``layer`` with its matmul weights and biases cast to ``dtype`` (norms unchanged)."""

    def cast(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(dtype)

    return replace(
        layer,
        qkv_weight=layer.qkv_weight.to(dtype),
        qkv_bias=cast(layer.qkv_bias),
        o_weight=layer.o_weight.to(dtype),
        o_bias=cast(layer.o_bias),
        gate_up_weight=layer.gate_up_weight.to(dtype),
        gate_up_bias=cast(layer.gate_up_bias),
        down_weight=layer.down_weight.to(dtype),
        down_bias=cast(layer.down_bias),
    )


def _fuse_into(*modules: torch.nn.Module, name: str) -> torch.Tensor | None:
    """Concatenate ``name`` ("weight"/"bias") of ``modules`` along dim 0, then re-point
    each module's parameter at its slice of the result, so memory is not doubled."""
    parts = [_param(m, name) for m in modules]
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError(f"Some projections have a {name} and others not; cannot fuse them.")
    tensors = [p for p in parts if p is not None]
    fused = torch.cat(tensors, dim=0).contiguous()
    offset = 0
    for module, tensor in zip(modules, tensors, strict=True):
        size = tensor.shape[0]
        getattr(module, name).data = fused[offset : offset + size]
        offset += size
    return fused


def child_module(module: torch.nn.Module, name: str) -> torch.nn.Module:
    child = getattr(module, name, None)
    if not isinstance(child, torch.nn.Module):
        raise ValueError(
            f"{type(module).__name__} has no submodule {name!r}: not a Llama-family layout."
        )
    return child


def module_weight(module: torch.nn.Module, child: str) -> torch.Tensor:
    return _required(child_module(module, child), "weight")


def _required(module: torch.nn.Module, name: str) -> torch.Tensor:
    value = _param(module, name)
    if value is None:
        raise ValueError(f"{type(module).__name__} has no {name!r} tensor.")
    return value


def _param(module: torch.nn.Module, name: str) -> torch.Tensor | None:
    value = getattr(module, name, None)
    return value.detach() if isinstance(value, torch.Tensor) else None
