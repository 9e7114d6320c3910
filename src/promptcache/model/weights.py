"""A Llama-family decoder's named tensors, and reading them into the runtime's layout.

:class:`ModelWeights` is a decoder's config plus its tensors under Hugging Face
parameter names (``model.layers.0.self_attn.q_proj.weight`` ...): taken from a
loaded HF model, or read straight from a model directory's safetensors, which spares
a warm start importing transformers' modeling code (about two seconds of it).

:func:`fused_layer` concatenates each layer's q/k/v and gate/up projections
into one matrix each (one matmul instead of three or two per step) and
re-points the named tensors -- and the parameters of any module attached to
them -- at slices of the fused tensors, so the model keeps working and no
weight is held twice. :func:`cast_layer` makes reduced-precision copies (16-bit
decode or prefill); :func:`int4_layer` puts a GGUF's own 4-bit blocks in place
of the float matrices they de-quantise to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from promptcache.model.gguf_blocks import QuantizedMatrix
from promptcache.model.quantized import QuantizedWeight, decode_matrix

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
    gguf: Path | None = None
    """The GGUF file the tensors were de-quantised from, if any: its 4-bit blocks
    can be decoded from directly (``decode_precision="int4"``)."""

    @classmethod
    def of_module(cls, model: torch.nn.Module) -> ModelWeights:
        """The weights of a loaded Hugging Face model, sharing its memory."""
        config = getattr(model, "config", None)
        if config is None:
            raise ValueError(f"{type(model).__name__} has no config: not a Hugging Face model.")
        return cls(config=config, tensors=NamedTensors.of_module(model))


Matrix = torch.Tensor | QuantizedWeight
"""A projection's weights: a float tensor, or GGUF blocks packed for a decode kernel."""


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer's tensors, projections fused."""

    input_norm: torch.Tensor
    qkv_weight: Matrix
    qkv_bias: torch.Tensor | None
    o_weight: Matrix
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up_weight: Matrix
    gate_up_bias: torch.Tensor | None
    down_weight: Matrix
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
    """``layer`` with its float matmul weights and biases cast to ``dtype`` (norms and
    int4 matrices unchanged)."""

    def cast(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(dtype)

    def cast_matrix(matrix: Matrix) -> Matrix:
        return matrix.to(dtype) if isinstance(matrix, torch.Tensor) else matrix

    return replace(
        layer,
        qkv_weight=cast_matrix(layer.qkv_weight),
        qkv_bias=cast(layer.qkv_bias),
        o_weight=cast_matrix(layer.o_weight),
        o_bias=cast(layer.o_bias),
        gate_up_weight=cast_matrix(layer.gate_up_weight),
        gate_up_bias=cast(layer.gate_up_bias),
        down_weight=cast_matrix(layer.down_weight),
        down_bias=cast(layer.down_bias),
    )


def int4_layer(
    layer: LayerWeights, matrices: Mapping[str, QuantizedMatrix], prefix: str
) -> tuple[LayerWeights, int]:
    """``layer`` with each fused projection whose parts all have 4-bit blocks in
    ``matrices`` (by HF name, ``{prefix}self_attn.q_proj.weight`` ...) run from
    them; the others keep ``layer``'s tensors. Returns it and how many of the four
    fused projections are int4.

    Each matrix must de-quantise to exactly the float32 tensor it replaces (rows
    sampled, at an odd stride so both rows of each RoPE pair are seen): a wrong
    name or row order fails loudly here instead of decoding nonsense."""
    attn, mlp = f"{prefix}self_attn.", f"{prefix}mlp."
    groups = {
        "qkv_weight": [f"{attn}{name}_proj.weight" for name in ("q", "k", "v")],
        "o_weight": [f"{attn}o_proj.weight"],
        "gate_up_weight": [f"{mlp}gate_proj.weight", f"{mlp}up_proj.weight"],
        "down_weight": [f"{mlp}down_proj.weight"],
    }
    changes: dict[str, QuantizedWeight] = {}
    for field_name, names in groups.items():
        parts = [matrices.get(name) for name in names]
        present = [part for part in parts if part is not None]
        if len(present) != len(parts) or len({part.format for part in present}) != 1:
            continue
        matrix = present[0] if len(present) == 1 else QuantizedMatrix.stack(present)
        exact = getattr(layer, field_name)
        rows = torch.arange(0, matrix.shape[0], 7)
        if not isinstance(exact, torch.Tensor) or not torch.equal(
            matrix.take_rows(rows).dequantize(), exact[rows].to(torch.float32)
        ):
            raise ValueError(
                f"The GGUF blocks of {', '.join(names)} do not de-quantise to the "
                "converted model's weights; cannot decode from them."
            )
        changes[field_name] = decode_matrix(matrix)
    return replace(layer, **changes), len(changes)  # type: ignore[arg-type]


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
