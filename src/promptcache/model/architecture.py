"""What the runtime reads from a Hugging Face config, checked once: sizes, and what it supports.

:class:`Architecture` refuses (``ValueError`` naming what is supported) any
config whose maths the runtime does not implement, so an unsupported model
fails at load time rather than computing wrong numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from promptcache.model.rope import SUPPORTED_ROPE_TYPES, rope_type
from promptcache.model.weights import required_tensor

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """A Llama-family decoder's sizes (RMSNorm, RoPE, grouped-query attention, SiLU MLP)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    eps: float
    max_positions: int
    """``max_position_embeddings``; 0 when the config has none."""
    window: int | None
    """The sliding attention window, when the model applies one."""

    @classmethod
    def of(cls, config: PreTrainedConfig) -> Architecture:
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"LlamaRuntime does not support model_type {model_type!r}; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}."
            )
        act = getattr(config, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"LlamaRuntime needs hidden_act 'silu', got {act!r} ({model_type}).")
        kind = rope_type(config)
        if kind not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"LlamaRuntime does not support rope_type {kind!r} ({model_type}); "
                f"supported: {', '.join(SUPPORTED_ROPE_TYPES)}."
            )
        num_heads = int(config.num_attention_heads)
        return cls(
            num_heads=num_heads,
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or num_heads),
            head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // num_heads),
            hidden=int(config.hidden_size),
            intermediate=int(config.intermediate_size),
            eps=float(config.rms_norm_eps),
            max_positions=int(getattr(config, "max_position_embeddings", 0) or 0),
            window=_sliding_window(config),
        )


def lm_head(config: PreTrainedConfig, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    head = tensors.get("lm_head.weight")
    if head is not None:
        return head
    if not getattr(config, "tie_word_embeddings", True):
        raise ValueError("The model has no 'lm_head.weight' and its embeddings are not tied.")
    return required_tensor(tensors, "model.embed_tokens.weight")  # tied: the same tensor


def _sliding_window(config: object) -> int | None:
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    # Qwen2 carries a sliding_window value but only applies it with use_sliding_window.
    if getattr(config, "model_type", None) == "qwen2" and not getattr(
        config, "use_sliding_window", False
    ):
        return None
    return int(window)
