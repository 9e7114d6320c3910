"""The output head of int4 decoding: 4-bit logits, the leading ones recomputed exactly.

The head of a small model is a large share of what a decode step reads
(SmolLM2-135M: its tied ``[49152, 576]`` embedding is 113 MB in float32, against
66 MB for all 30 int4 layers), and its GGUF format is usually ``Q8_0``, which
the int4 kernel runs as two nibble planes at 5 bits per weight
(:meth:`~promptcache.model.quantized.Int4Weight.of_q8_0`): measured here, 2.9 ms
a step instead of 5.6 ms. But that kernel's inputs and outputs are bfloat16, and
a logit of 20 rounded to bfloat16 is only known to 0.125 -- enough to reorder
the leading candidates, which is all greedy decoding looks at.

So :class:`Int4Head` uses the 4-bit logits only to find the candidates, and
recomputes those exactly from the float32 weights and activations. The
candidates are every token whose 4-bit logit could still be the largest: with
``x`` and the weights rounded to bfloat16 (relative error at most 2^-9 each) and
the result rounded once more, a logit is off by at most ``2^-8 * |x . |w||`` plus
``2^-9`` of itself, and ``|x . |w|| <= |x| |w|`` (Cauchy-Schwarz), so each row gets
the bound ``2^-7 |x| |w_row| + 2^-8 |logit|`` (twice the model, for the float32
sums) and every row whose upper bound reaches the largest lower bound is
recomputed. The row with the largest exact logit is always among them, so greedy
decoding picks what the float32 head would; the other logits -- the tail, which
sampling weights by ``exp(logit / T)`` -- keep their 4-bit value. Measured on
SmolLM2 chat replies (3 prompts x 48 greedy tokens): a median of 2 candidates a
step, 7 at the 90th percentile, 29 at most. Past ``_MOST_CANDIDATES`` (a flat
distribution) the whole row is computed exactly.

That bound is the kernel's own (``logit_bounds``): the one above for torch's int4
kernel; on the GGUF block kernels (:class:`~promptcache.model.block_weights.BlockWeight`),
whose weights are exact and whose activations are rounded to 8-bit blocks, ``|w_row|``
times the rounding's Euclidean size (half a step per element) plus a float32-sums term.

Each row is refined on its own, with the same operations whatever the batch,
so a sequence's logits do not depend on what it is batched with.
"""

from __future__ import annotations

import torch

from promptcache.model.block_weights import BlockWeight
from promptcache.model.gguf_blocks import BLOCK
from promptcache.model.quantized import Int4Weight
from promptcache.model.torch_threads import torch_threads

__all__ = ["Int4Head"]

_MOST_CANDIDATES = 2048
"""Above this many candidates, one exact pass over the whole row is about as fast."""


class Int4Head:
    """Logits from ``packed`` (the head on a quantized kernel), refined from ``exact``."""

    def __init__(self, packed: Int4Weight | BlockWeight, exact: torch.Tensor) -> None:
        if tuple(exact.shape) != (packed.out_features, packed.in_features):
            raise ValueError(
                f"the exact head {tuple(exact.shape)} does not match the packed one "
                f"[{packed.out_features}, {packed.in_features}]"
            )
        self.packed = packed
        self.exact = exact
        self._row_norms = torch.linalg.vector_norm(exact.to(torch.float32), dim=1)
        # The block kernels' library has the refinement too (a BlockWeight means it is
        # loaded); torch's int4 kernel keeps the torch operations below.
        self._in_one_call = isinstance(packed, BlockWeight) and exact.dtype == torch.float32
        if self._in_one_call:
            self.exact = exact.contiguous()

    @property
    def nbytes(self) -> int:
        """Bytes one pass reads (the packed head; the refined rows are a few hundred KB)."""
        return self.packed.nbytes

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[rows, vocab]`` (float32) of the hidden states ``x`` ``[rows, hidden]``."""
        coarse = self.packed.decode_matmul(x).to(torch.float32)
        if self._in_one_call and x.dtype == torch.float32:
            # Every row's bound and refinement in one C++ call (kernels/head_refine.cpp):
            # a row's bound in torch was half a dozen operations, each a handover of the
            # GIL that the model thread waited to get back while requests ran Python.
            torch.ops.promptcache_blocks.refine_block_logits(
                coarse, x.contiguous(), self._row_norms, self.exact, BLOCK, _MOST_CANDIDATES
            )
            return coarse
        # The refinement's vocabulary-wide element-wise operations are the only ones in a
        # decode step large enough for torch to split across OpenMP's team, and after each
        # split that team's threads spin for milliseconds, on the cores the block kernels'
        # own helpers need for the next step (work_share.cpp): one thread does them in
        # tens of microseconds.
        with torch_threads(1):
            for row in range(x.shape[0]):
                self._refine(coarse[row], x[row])
        return coarse

    def _refine(self, logits: torch.Tensor, x: torch.Tensor) -> None:
        """Replace, in place, every logit that could be the largest with its exact value."""
        activation, relative = self.packed.logit_bounds(x)
        bound = self._row_norms * activation
        if relative:
            bound = bound.add_(logits.abs(), alpha=relative)
        floor = (logits - bound).max()
        candidates = torch.nonzero((logits + bound) >= floor).squeeze(1)
        if candidates.numel() > _MOST_CANDIDATES:
            logits.copy_(torch.mv(self.exact.to(x.dtype), x))
            return
        rows = self.exact.index_select(0, candidates).to(x.dtype)
        logits.index_copy_(0, candidates, torch.mv(rows, x).to(logits.dtype))
