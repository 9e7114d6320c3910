"""The int4 output head: a GGUF's Q8_0 head as two nibble planes, refined exactly.

The planes must multiply by ``d * q`` with only ``d`` rounded to bfloat16; the
refinement must make greedy decoding pick what the float32 head picks -- also
when the leading logits are closer together than bfloat16 can tell apart -- and
a row's logits must not depend on the rows batched with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from promptcache.model import output_head, precision
from promptcache.model.block_kernels import block_kernels
from promptcache.model.block_weights import BlockWeight
from promptcache.model.gguf_blocks import Q8Matrix, read_gguf_head
from promptcache.model.loading import LoadedModel
from promptcache.model.output_head import Int4Head
from promptcache.model.quantized import Int4Weight, int4_kernels_work, quantized_decode_works
from promptcache.model.runtime import LlamaRuntime

pytestmark = pytest.mark.skipif(not quantized_decode_works(), reason="no int4 kernels here")
torch_int4 = pytest.mark.skipif(not int4_kernels_work(), reason="no CPU int4 kernels in torch")


def packed_q8(matrix: Q8Matrix, backend: str) -> Int4Weight | BlockWeight:
    return BlockWeight.of_q8_0(matrix) if backend == "blocks" else Int4Weight.of_q8_0(matrix)


def random_q8(rows: int = 256, cols: int = 96, seed: int = 0) -> Q8Matrix:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(-128, 128, (rows, cols), dtype=torch.int8, generator=generator)
    scales = (torch.rand(rows, cols // 32, generator=generator) * 0.01 + 1e-4).half()
    return Q8Matrix(values, scales)


@torch_int4
def test_the_nibble_planes_multiply_by_the_q8_values_with_d_rounded_to_bfloat16() -> None:
    matrix = random_q8()
    packed = Int4Weight.of_q8_0(matrix)
    assert packed.planes == 2 and (packed.out_features, packed.in_features) == matrix.shape
    rounded = Q8Matrix(matrix.values, matrix.scales.to(torch.bfloat16).to(torch.float16))
    x = torch.randn(3, matrix.shape[1]).to(torch.bfloat16)
    want = x.to(torch.float32) @ rounded.dequantize().T
    got = packed.matmul(x).to(torch.float32)
    # Only the bfloat16 output rounding is left between the two.
    torch.testing.assert_close(got, want, rtol=2**-8, atol=1e-6)


@torch_int4
def test_greedy_picks_the_float32_heads_token_even_among_near_ties() -> None:
    matrix = random_q8(rows=512, cols=64, seed=1)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(2))
    # Near ties: each leader gets a rival with the same bytes and scales one float16 step
    # away, which bfloat16 (the coarse pass) cannot tell apart.
    leaders = (x @ matrix.dequantize().T).argmax(-1).tolist()
    values, scales = matrix.values.clone(), matrix.scales.clone()
    for row, leader in enumerate(leaders):
        rival = (leader + 1 + 7 * row) % values.shape[0]
        if rival in leaders:
            continue
        toward = torch.full_like(scales[leader], float("inf") if row % 2 else 0.0)
        values[rival], scales[rival] = values[leader], torch.nextafter(scales[leader], toward)
    tied = Q8Matrix(values, scales)
    exact = tied.dequantize()
    packed = Int4Weight.of_q8_0(tied)
    want = x @ exact.T
    got = Int4Head(packed, exact).logits(x)
    assert got.argmax(-1).tolist() == want.argmax(-1).tolist()
    coarse = packed.matmul(x.to(torch.bfloat16)).to(torch.float32)
    assert coarse.argmax(-1).tolist() != want.argmax(-1).tolist(), "the ties are real"
    # The leading logit itself is the exact one, not its bfloat16 estimate.
    top = want.argmax(-1, keepdim=True)
    torch.testing.assert_close(got.gather(1, top), want.gather(1, top), rtol=1e-6, atol=1e-5)


def test_a_rows_logits_do_not_depend_on_its_batch(decode_backend: str) -> None:
    matrix = random_q8(rows=512, cols=64, seed=3)
    head = Int4Head(packed_q8(matrix, decode_backend), matrix.dequantize())
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(4))
    together = head.logits(x)
    for row in range(5):
        assert torch.equal(head.logits(x[row : row + 1])[0], together[row])


def test_the_embedded_models_head_decodes_from_its_q8_0_blocks(
    embedded_model: LoadedModel, decode_backend: str
) -> None:
    assert embedded_model.weights.gguf is not None
    matrix = read_gguf_head(embedded_model.weights.gguf)
    assert matrix is not None
    runtime = LlamaRuntime(embedded_model.weights, decode_precision="int4")
    head = runtime._decode.lm_head
    assert isinstance(head, Int4Head)
    assert isinstance(head.packed, BlockWeight if decode_backend == "blocks" else Int4Weight)
    rows = torch.arange(0, matrix.shape[0], 97)
    assert torch.equal(matrix.dequantize(rows), head.exact[rows])
    exact = LlamaRuntime(embedded_model.weights)
    # int4 decode reads about 5 bits a weight for the layers and 8.5 for the head (the
    # GGUF's own bytes and float16 scales, in tiles), against float32's 32.
    assert runtime.weight_bytes("decode") < 0.25 * exact.weight_bytes("decode")


@pytest.mark.skipif(not block_kernels(), reason="no GGUF block kernels here")
@pytest.mark.parametrize("most", [2048, 1])
def test_the_block_heads_refinement_recomputes_exactly_the_candidates(
    monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    """The one-call refinement (kernels/head_refine.cpp) follows Int4Head's rule: the
    logits whose upper bound reaches the largest lower bound are exact, the others keep
    their coarse value; past the candidate limit, the whole row is exact."""
    monkeypatch.setattr(output_head, "_MOST_CANDIDATES", most)
    matrix = random_q8(rows=512, cols=64, seed=8)
    exact = matrix.dequantize()
    packed = BlockWeight.of_q8_0(matrix)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(9))
    got = Int4Head(packed, exact).logits(x)
    coarse = packed.decode_matmul(x)
    want = x @ exact.T
    norms = torch.linalg.vector_norm(exact, dim=1)
    whole_rows = 0
    for row in range(x.shape[0]):
        bound = norms * packed.logit_bounds(x[row])[0]
        floor = (coarse[row] - bound).max()
        candidates = (coarse[row] + bound) >= floor
        assert 1 <= int(candidates.sum()) < 512
        if int(candidates.sum()) > most:
            candidates[:] = True
            whole_rows += 1
        torch.testing.assert_close(
            got[row][candidates], want[row][candidates], rtol=1e-6, atol=1e-5
        )
        assert torch.equal(got[row][~candidates], coarse[row][~candidates]), "the tail kept"
    assert got.argmax(-1).tolist() == want.argmax(-1).tolist()
    assert (whole_rows > 0) == (most == 1), "the whole-row path taken exactly when asked"


@torch_int4
def test_a_head_torchs_kernel_cannot_tile_stays_float32(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from promptcache.model import quantized

    monkeypatch.setattr(quantized, "block_kernels", lambda: False)
    odd = random_q8(rows=50, cols=64)  # 50 rows: not a multiple of the kernel's 16
    monkeypatch.setattr(precision, "read_gguf_head", lambda path: odd)
    exact = odd.dequantize()
    assert precision._int4_head(tmp_path / "model.gguf", exact) is exact


def test_a_head_that_is_not_the_models_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = random_q8(rows=64, cols=64, seed=5)
    monkeypatch.setattr(precision, "read_gguf_head", lambda path: other)
    with pytest.raises(ValueError, match="does not de-quantise"):
        precision._int4_head(tmp_path / "model.gguf", random_q8(rows=64, cols=64).dequantize())


def test_the_coarse_logits_are_within_their_bound(decode_backend: str) -> None:
    """The bound the refinement trusts holds for every row, on activations shaped like a
    model's (a few large components), and greedy picks the float32 head's token."""
    matrix = random_q8(rows=2048, cols=576, seed=6)
    exact = matrix.dequantize()
    packed = packed_q8(matrix, decode_backend)
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(16, 576, generator=generator)
    x[:, ::97] *= 40.0  # outliers widen a block's step: the bound must follow them
    coarse = packed.decode_matmul(x).to(torch.float32)
    want = (x.double() @ exact.double().T).float()
    norms = torch.linalg.vector_norm(exact, dim=1)
    for row in range(x.shape[0]):
        activation, relative = packed.logit_bounds(x[row])
        bound = norms * activation + relative * coarse[row].abs()
        assert bool(((coarse[row] - want[row]).abs() <= bound).all()), row
    head = Int4Head(packed, exact)
    assert head.logits(x).argmax(-1).tolist() == want.argmax(-1).tolist()
