"""Rotary position embeddings: the cos/sin table, reproduced exactly as the model computes it.

The default frequencies use each model class's own formula; the scaled
variants (``linear``, ``llama3``, ``yarn``) use transformers' own functions,
so every variant matches the model's numbers. Only variants whose cos/sin for
a position do not depend on the sequence length are supported: a KV cache
keeps rotated keys, which ``dynamic`` and ``longrope`` would rotate anew as
the sequence grows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
_TABLE_MIN = 1024


def rope_type(config: object) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(params, dict):
        return str(params.get("rope_type") or params.get("type") or "default")
    return "default"


def rope_frequencies(config: PreTrainedConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    """RoPE inverse frequencies and the cos/sin scaling factor, as the model computes them."""
    kind = rope_type(config)
    if kind == "default":  # each model class's own formula; identical across them
        params = getattr(config, "rope_parameters", None) or {}
        base = float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim
        return 1.0 / (base**exponents), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    inverse_frequencies, scaling = ROPE_INIT_FUNCTIONS[kind](config)
    return inverse_frequencies, float(scaling)


class RopeTable:
    """cos/sin per position, grown on demand (at least doubling), in the model's dtype.

    The first half of ``sin`` is negated: rotate_half(x) is then roll(x, D/2)
    times it, so RoPE is ``x * cos + x.roll(D/2, -1) * sin``.
    """

    def __init__(self, config: PreTrainedConfig, head_dim: int, dtype: torch.dtype) -> None:
        self._config = config
        self._head_dim = head_dim
        self._dtype = dtype
        self._cos = torch.empty(0, head_dim, dtype=dtype)
        self._sin = torch.empty(0, head_dim, dtype=dtype)

    def span(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of positions ``[start, end)``, shaped ``[end - start, 1, head_dim]``."""
        if end > self._cos.shape[0]:
            self._grow(end)
        return self._cos[start:end, None], self._sin[start:end, None]

    def at(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of each of ``positions``, shaped ``[len(positions), 1, head_dim]``."""
        needed = max(positions) + 1
        if needed > self._cos.shape[0]:
            self._grow(needed)
        index = torch.tensor(positions)
        return self._cos[index][:, None], self._sin[index][:, None]

    def _grow(self, needed: int) -> None:
        size = max(needed, 2 * self._cos.shape[0], _TABLE_MIN)
        inverse_frequencies, scaling = rope_frequencies(self._config, self._head_dim)
        # The same float32 arithmetic as transformers' rotary embedding forward.
        freqs = torch.arange(size).float()[:, None] * inverse_frequencies.float()[None, :]
        angles = torch.cat((freqs, freqs), dim=-1)
        cos = (angles.cos() * scaling).to(self._dtype)
        sin = (angles.sin() * scaling).to(self._dtype)
        half = self._head_dim // 2
        sin[:, :half] = -sin[:, :half]
        self._cos, self._sin = cos.contiguous(), sin.contiguous()
