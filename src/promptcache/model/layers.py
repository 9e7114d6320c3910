"""One decoder layer's maths over a slice of the KV buffer: attention, then the gated MLP.

A prompt chunk's attention is one ``scaled_dot_product_attention`` call per
layer over a slice of the cache, with ``enable_gqa`` (no ``repeat_kv`` copy) and
4-D inputs, which keeps PyTorch on its CPU flash kernel (3-D inputs or a boolean
mask fall back to the ~4x slower math path). A decode step's single query is
two small ``bmm`` and a softmax (:meth:`LayerMath.decode_rows`). Matmuls go through oneDNN when
it works here: MKL's float32 matrix-vector path is about twice as slow on AMD
CPUs for the ``[1, hidden]`` decode shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptcache.model.architecture import Architecture
from promptcache.model.block_kernels import block_kernels
from promptcache.model.quantized import QUANTIZED_MATRICES
from promptcache.model.weights import LayerWeights, Matrix


class LayerMath:
    """The layer maths of one :class:`Architecture` in ``dtype`` (``onednn``: its matmuls)."""

    def __init__(self, arch: Architecture, dtype: torch.dtype, *, onednn: bool | None) -> None:
        self._num_heads = arch.num_heads
        self._num_kv_heads = arch.num_kv_heads
        self._head_dim = arch.head_dim
        self._hidden = arch.hidden
        self._intermediate = arch.intermediate
        self._eps = arch.eps
        self._scale = arch.head_dim**-0.5
        self._eps_tensor = torch.tensor(arch.eps, dtype=dtype)
        self._dtype = dtype
        self._onednn = _onednn_works(dtype) if onednn is None else onednn
        self._fused_attention = dtype == torch.float32 and block_kernels()

    def norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self._hidden,), weight, self._eps)

    def linear(self, x: torch.Tensor, weight: Matrix, bias: torch.Tensor | None) -> torch.Tensor:
        if isinstance(weight, QUANTIZED_MATRICES):  # a GGUF's blocks (int4 decode)
            return weight.linear(x, bias)
        if weight.dtype == torch.bfloat16 and x.dtype != torch.bfloat16:  # bfloat16 prompts
            return tiled_linear(x, weight, bias)
        if weight.dtype != x.dtype:  # 16-bit decode weights
            return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)
        if self._onednn:
            out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
            return out
        return F.linear(x, weight, bias)

    def mask(self, start: int, count: int) -> tuple[torch.Tensor | None, bool]:
        """The attention mask for ``count`` queries at ``start``, and whether it is plain causal.

        One query sees every key (no mask); a chunk at position 0 is plain causal
        (SDPA's ``is_causal``, which skips masked blocks); a later chunk needs an
        explicit mask, since ``is_causal`` aligns the triangle to the top-left. The
        mask is additive float: with 4-D inputs that keeps SDPA on its flash kernel.
        """
        if count == 1:
            return None, False
        if start == 0:
            return None, True
        keys = torch.arange(start + count)
        queries = torch.arange(start, start + count)
        mask = torch.zeros(count, start + count, dtype=self._dtype)
        return mask.masked_fill_(keys[None, :] > queries[:, None], float("-inf")), False

    def layer(
        self,
        x: torch.Tensor,
        layer: LayerWeights,
        kv: torch.Tensor,
        start: int,
        end: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
    ) -> torch.Tensor:
        """Tokens ``x`` at positions ``[start, end)`` through one layer, writing their KV."""
        count = x.shape[0]
        heads, kv_heads, dim = self._num_heads, self._num_kv_heads, self._head_dim
        qkv, qk = self._qkv_with_rope(x, layer, cos, sin)
        # copy_ rounds to the KV buffer's dtype (--kv-dtype) as it writes, so a
        # miss attends over exactly the values a cache hit reads back.
        kv[0, :, start:end].copy_(qk[:, heads:].transpose(0, 1))
        kv[1, :, start:end].copy_(qkv[:, heads + kv_heads :].transpose(0, 1))
        q = qk[:, :heads].transpose(0, 1).unsqueeze(0)
        attn = _attention(
            q, kv[0, :, :end].unsqueeze(0), kv[1, :, :end].unsqueeze(0), mask, causal
        )[0].transpose(0, 1)
        return self._output_and_mlp(x, attn.reshape(count, heads * dim), layer)

    def decode_rows(
        self,
        x: torch.Tensor,
        layer: LayerWeights,
        buffers: list[torch.Tensor],
        positions: list[int],
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        """One generated token per row of ``x``, each at its position over its own KV buffer.

        A lone decode step is one row and a batch of concurrent steps several, through
        these same operations: each row's numbers do not depend on the others (with
        ``int4`` bitwise; float matmuls up to summation order). Where every decode matrix
        is GGUF blocks over a float32 cache, the runtime runs the same maths as one C++
        call instead (:mod:`promptcache.model.fused_decode`)."""
        heads, kv_heads, dim = self._num_heads, self._num_kv_heads, self._head_dim
        qkv = self._raw_linear(self._decode_norm(x, layer.input_norm), layer.qkv_weight)
        qkv = self._with_bias(qkv, layer.qkv_bias).view(x.shape[0], -1, dim)
        qk = qkv[:, : heads + kv_heads]
        qk = qk * cos + qk.roll(dim // 2, -1) * sin
        values = qkv[:, heads + kv_heads :]
        rows = [
            self._attend_one(qk[row], values[row], kv, position)
            for row, (kv, position) in enumerate(zip(buffers, positions, strict=True))
        ]
        attn = rows[0][None] if len(rows) == 1 else torch.stack(rows)
        # The matmuls' 16-bit results are added to the float32 residual stream as they
        # are (type promotion): a cast per matmul fewer, the same numbers.
        x = x + self._with_bias(self._raw_linear(attn, layer.o_weight), layer.o_bias)
        h = self._decode_norm(x, layer.post_norm)
        gate_up = self._with_bias(self._raw_linear(h, layer.gate_up_weight), layer.gate_up_bias)
        act = F.silu(gate_up[:, : self._intermediate].to(x.dtype))
        act = act.mul_(gate_up[:, self._intermediate :])
        down = self._raw_linear(act, layer.down_weight)
        return x + self._with_bias(down, layer.down_bias)

    def _decode_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm in fewer dispatched operations than ``F.rms_norm`` (~8 us against ~13 us
        for one row here); decode steps only, so prompt tokens' numbers do not change."""
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        mean_square = torch.addcmul(self._eps_tensor, norm, norm, value=1.0 / self._hidden)
        return (x * torch.rsqrt(mean_square)).mul_(weight)

    def _raw_linear(self, x: torch.Tensor, weight: Matrix) -> torch.Tensor:
        """``x @ W.T`` in the weight's own precision (16-bit for float16 decode and torch's
        int4 kernel, float32 for the block kernels)."""
        if isinstance(weight, QUANTIZED_MATRICES):
            return weight.decode_matmul(x)
        if weight.dtype != x.dtype:
            return F.linear(x.to(weight.dtype), weight)
        return self.linear(x, weight, None)

    @staticmethod
    def _with_bias(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return out if bias is None else out + bias

    def _attend_one(
        self, qk: torch.Tensor, value: torch.Tensor, kv: torch.Tensor, position: int
    ) -> torch.Tensor:
        """One query's attention over ``kv[:, :, :position + 1]``, after writing its key
        and value at ``position``; ``[heads * head_dim]``.

        A decode step is a few hundred tiny operations, and their dispatch costs more
        than their maths: one query against a float32 cache is two small ``bmm`` and a
        softmax (measured here over 300 keys: ~30 us, SDPA's flash kernel ~36 us). A
        16-bit cache goes through SDPA, which accumulates in float32. Where the block
        kernels run, a float32 cache goes through their ``decode_attention`` instead: all
        of it in one call (py-spy on a serving AVX2 EPYC: the bmm pair alone had been a
        fifth of a decode step)."""
        if self._fused_attention and kv.dtype == torch.float32:
            out: torch.Tensor = torch.ops.promptcache_blocks.decode_attention(
                qk.to(kv.dtype).contiguous(),
                value.to(kv.dtype).contiguous(),  # 16-bit for float16 decode weights
                kv,
                position,
                self._scale,
            )
            return out
        heads, kv_heads, dim = self._num_heads, self._num_kv_heads, self._head_dim
        slot = kv[:, :, position]
        slot[0].copy_(qk[heads:])
        slot[1].copy_(value)
        end = position + 1
        keys, values = kv[0, :, :end], kv[1, :, :end]
        if keys.dtype != qk.dtype:
            q = qk[:heads].unsqueeze(1)[None]
            return _attention(q, keys[None], values[None], None, False).reshape(-1)
        q = qk[:heads].view(kv_heads, heads // kv_heads, dim)
        scores = torch.bmm(q, keys.transpose(1, 2)).mul_(self._scale)
        return torch.bmm(torch.softmax(scores, -1), values).view(-1)

    def _qkv_with_rope(
        self, x: torch.Tensor, layer: LayerWeights, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q/k/v per token and head, RoPE'd queries and keys) for the rows of ``x``."""
        h = self.norm(x, layer.input_norm)
        qkv = self.linear(h, layer.qkv_weight, layer.qkv_bias).view(x.shape[0], -1, self._head_dim)
        # RoPE on queries and keys together: x*cos + rotate_half(x)*sin, where
        # rotate_half(x) = roll(x, D/2) with the first half negated (folded into sin).
        qk = qkv[:, : self._num_heads + self._num_kv_heads]
        return qkv, qk * cos + qk.roll(self._head_dim // 2, -1) * sin

    def _output_and_mlp(
        self, x: torch.Tensor, attn: torch.Tensor, layer: LayerWeights
    ) -> torch.Tensor:
        """The rest of a layer after attention: output projection, then the gated MLP."""
        x = x + self.linear(attn, layer.o_weight, layer.o_bias)
        h = self.norm(x, layer.post_norm)
        gate_up = self.linear(h, layer.gate_up_weight, layer.gate_up_bias)
        act = F.silu(gate_up[:, : self._intermediate]) * gate_up[:, self._intermediate :]
        return x + self.linear(act, layer.down_weight, layer.down_bias)


PROMPT_TILE_ROWS = 64
"""Rows of every bfloat16 prompt matmul (see :func:`tiled_linear`)."""


def tiled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` in bfloat16 over tiles of exactly ``PROMPT_TILE_ROWS`` rows (the last
    one zero-padded), the result in ``x``'s dtype.

    oneDNN picks its bfloat16 kernel by the number of rows, and kernels sum in
    different orders: measured here, a row's result changed with the rows around
    it (a 20-token suffix after a cache hit against the same tokens inside a
    512-token miss chunk), which bfloat16 rounding turned into different keys,
    values and greedy tokens. With every call the same shape, a row's result
    depends on that row alone (checked bitwise, shifted and padded, on 1 and 2
    threads), so a hit computes each prompt token exactly as the miss did -- and
    64-row tiles were also faster than one call per 512-token chunk (286 ms
    against 431 ms of matmuls per chunk here)."""
    rows = x.shape[0]
    tiles = -(-rows // PROMPT_TILE_ROWS)
    if tiles * PROMPT_TILE_ROWS == rows:
        padded = x.to(torch.bfloat16)
    else:  # one pass: the cast is written into the zero-padded buffer
        padded = x.new_zeros((tiles * PROMPT_TILE_ROWS, x.shape[1]), dtype=torch.bfloat16)
        padded[:rows].copy_(x)
    out = x.new_empty((rows, weight.shape[0]))
    for start in range(0, rows, PROMPT_TILE_ROWS):
        tile = F.linear(padded[start : start + PROMPT_TILE_ROWS], weight)
        out[start : start + PROMPT_TILE_ROWS].copy_(tile[: rows - start])  # cast as it copies
    return out if bias is None else out.add_(bias)


def _attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
) -> torch.Tensor:
    """SDPA in the KV's dtype (queries and mask cast to it), the result in the queries' dtype.

    A 16-bit KV (``--kv-dtype``) is attended over as it is stored: upcasting
    it to float32 would copy the whole context per layer and step, ~3x slower
    than SDPA's 16-bit CPU kernel, which accumulates in float32 anyway.
    """
    dtype = q.dtype
    if keys.dtype != dtype:
        q = q.to(keys.dtype)
        mask = None if mask is None else mask.to(keys.dtype)
    out = F.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask, is_causal=causal, enable_gqa=True
    )
    return out.to(dtype)


def _onednn_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's linear is available here and agrees with ``F.linear``."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(3, 64, generator=generator).to(dtype)
        w = torch.randn(32, 64, generator=generator).to(dtype)
        b = torch.randn(32, generator=generator).to(dtype)
        with torch.inference_mode():
            got = op(x, w, b, "none", [], "")
            ref = F.linear(x, w, b)
        return bool(torch.allclose(got.float(), ref.float(), rtol=1e-3, atol=1e-3))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
