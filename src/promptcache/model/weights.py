"""A Llama-family decoder's named tensors, and reading them into the runtime's layout.

:class:`ModelWeights` is a decoder's config plus its tensors under Hugging Face
parameter names (``model.layers.0.self_attn.q_proj.weight`` ...): taken from a
loaded HF model, or read straight from a model directory's safetensors, which spares
a warm start importing transformers' modeling code (about two seconds of it).

:func:`fused_layer` concatenates each layer's q/k/v and gate/up projections
into one matrix each (one matmul instead of three or two per step) and
re-points the named tensors -- and the parameters of any module attached to
them -- at slices of the fused tensors, so the model keeps working and no
weight is held twice. :func:`cast_layer` makes reduced-precision copies for
the optional fast decode path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedConfig


class NamedTensors(MutableMapping[str, torch.Tensor]):
    """Tensors by parameter name, kept in step with the modules built over them.

    Replacing a tensor also re-points the same-named parameter of every
    attached module (one built with ``load_state_dict(..., assign=True)`` over
    these tensors), so the module and the runtime keep sharing memory.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None) -> None:
        self._tensors: dict[str, torch.Tensor] = dict(tensors or {})
        self._modules: list[torch.nn.Module] = []

    @classmethod
    def of_module(cls, module: torch.nn.Module) -> NamedTensors:
        """The parameters of ``module`` (shared ones once, under their first name), attached."""
        named = cls({name: param.detach() for name, param in module.named_parameters()})
        named.attach(module)
        return named

    def attach(self, module: torch.nn.Module) -> None:
        """Keep ``module``'s same-named parameters pointing at these tensors from now on."""
        self._modules.append(module)

    @property
    def attached(self) -> tuple[torch.nn.Module, ...]:
        return tuple(self._modules)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self._tensors[name] = value
        for module in self._modules:
            try:
                parameter = module.get_parameter(name)
            except AttributeError:
                continue
            parameter.data = value

    def __delitem__(self, name: str) -> None:
        del self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


@dataclass(frozen=True)
class ModelWeights:
    """A decoder's config and its tensors by Hugging Face parameter name."""

    config: PreTrainedConfig
    tensors: NamedTensors

    @classmethod
    def of_module(cls, model: torch.nn.Module) -> ModelWeights:
        """The weights of a loaded Hugging Face model, sharing its memory."""
        config = getattr(model, "config", None)
        if config is None:
            raise ValueError(f"{type(model).__name__} has no config: not a Hugging Face model.")
        return cls(config=config, tensors=NamedTensors.of_module(model))


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


def fused_layer(tensors: MutableMapping[str, torch.Tensor], prefix: str) -> LayerWeights:
    """The fused weights of the layer whose parameters are named ``{prefix}self_attn...``."""
    attn, mlp = f"{prefix}self_attn.", f"{prefix}mlp."
    qkv = [f"{attn}{name}_proj" for name in ("q", "k", "v")]
    gate_up = [f"{mlp}gate_proj", f"{mlp}up_proj"]
    qkv_weight = _fuse_into(tensors, qkv, "weight")
    gate_up_weight = _fuse_into(tensors, gate_up, "weight")
    if qkv_weight is None or gate_up_weight is None:
        raise ValueError(
            f"No attention or MLP projection weights under {prefix!r}: "
            "not a Llama-family layout; cannot build the runtime."
        )
    return LayerWeights(
        input_norm=required_tensor(tensors, f"{prefix}input_layernorm.weight"),
        qkv_weight=qkv_weight,
        qkv_bias=_fuse_into(tensors, qkv, "bias"),
        o_weight=required_tensor(tensors, f"{attn}o_proj.weight"),
        o_bias=tensors.get(f"{attn}o_proj.bias"),
        post_norm=required_tensor(tensors, f"{prefix}post_attention_layernorm.weight"),
        gate_up_weight=gate_up_weight,
        gate_up_bias=_fuse_into(tensors, gate_up, "bias"),
        down_weight=required_tensor(tensors, f"{mlp}down_proj.weight"),
        down_bias=tensors.get(f"{mlp}down_proj.bias"),
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


def required_tensor(tensors: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    value = tensors.get(name)
    if value is None:
        raise ValueError(f"The model has no tensor {name!r}: not a Llama-family layout.")
    return value


def _fuse_into(
    tensors: MutableMapping[str, torch.Tensor], modules: list[str], kind: str
) -> torch.Tensor | None:
    """Concatenate ``{module}.{kind}`` ("weight"/"bias") of ``modules`` along dim 0, then
    re-point each name at its slice of the result, so memory is not doubled."""
    names = [f"{module}.{kind}" for module in modules]
    parts = [tensors.get(name) for name in names]
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError(f"Some projections have a {kind} and others not; cannot fuse them.")
    present = [p for p in parts if p is not None]
    fused = torch.cat(present, dim=0).contiguous()
    offset = 0
    for name, tensor in zip(names, present, strict=True):
        size = tensor.shape[0]
        tensors[name] = fused[offset : offset + size]
        offset += size
    return fused
