"""The GGUF block kernels: the GGUF's values exactly, llama.cpp's activation rounding,
rows independent of their batch and of the thread count, bad input refused.

Each kernel result is checked against float64 maths on the activations rounded as
the kernels round them (:func:`rounded_activations`): that leaves only float32
summation order between the two.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from promptcache.model.block_kernels import _cpu_flags, block_kernels, kernel_isa
from promptcache.model.block_weights import (
    BlockWeight,
    rounded_activations,
    tile_q4,
    tile_q8,
    tile_scales,
)
from promptcache.model.gguf_blocks import Q8Matrix
from promptcache.model.torch_threads import torch_threads
from tests.model.block_matrices import q4, q8

pytestmark = pytest.mark.skipif(not block_kernels(), reason="no GGUF block kernels here")

VNNI_FLAGS = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"}
HAS_VNNI = _cpu_flags() >= VNNI_FLAGS
needs_vnni = pytest.mark.skipif(not HAS_VNNI, reason="this CPU lacks AVX-512 VNNI")


@pytest.fixture(autouse=True, params=["avx2", pytest.param("avx512-vnni", marks=needs_vnni)])
def isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test on each instruction set the CPU has; the process's choice restored after."""
    chosen = kernel_isa(request.param)
    try:
        yield chosen
    finally:
        kernel_isa("auto")


def identity_q8() -> Q8Matrix:
    """One weight of 1 per row: each output is one rounded activation."""
    return Q8Matrix(torch.eye(32, dtype=torch.int8), torch.ones(32, 1).half())


def expected(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (rounded_activations(x).double() @ weights.double().T).float()


@pytest.mark.parametrize("blocks", [1, 2, 3, 18])
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_q4_blocks_keep_the_gguf_weights_and_multiply_by_rounded_activations(
    kind: str, blocks: int
) -> None:
    matrix = q4(kind, rows=37, blocks=blocks, seed=blocks)
    weight = BlockWeight.of(matrix)
    assert torch.equal(weight.dequantize(), matrix.dequantize()), "the GGUF's weights, bitwise"
    x = torch.randn(6, 32 * blocks, generator=torch.Generator().manual_seed(7)) * 3
    with torch.inference_mode():
        got = weight.matmul(x)
    torch.testing.assert_close(got, expected(x, matrix.dequantize()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blocks", [1, 3, 18])
def test_q8_blocks_keep_the_gguf_weights_and_multiply_by_rounded_activations(blocks: int) -> None:
    matrix = q8(rows=41, blocks=blocks, seed=blocks)
    matrix.values[0, :32] = -128  # |w| = 128: the sign trick's edge
    weight = BlockWeight.of_q8_0(matrix)
    assert torch.equal(weight.dequantize(), matrix.dequantize())
    x = torch.randn(5, 32 * blocks, generator=torch.Generator().manual_seed(8))
    x[0, :32] = 127.0  # every activation at the top of its block's range
    with torch.inference_mode():
        got = weight.matmul(x)
    torch.testing.assert_close(got, expected(x, matrix.dequantize()), rtol=1e-5, atol=1e-4)


def test_rounding_is_llama_cpps_8_bit_blocks() -> None:
    x = torch.tensor([[127.0, -63.4, 0.49, 0.51] + [0.0] * 28])
    assert rounded_activations(x)[0, :4].tolist() == [127.0, -63.0, 0.0, 1.0]
    # The kernel rounds the same way: one weight per element picks it out.
    weight = BlockWeight.of_q8_0(
        Q8Matrix(torch.eye(32, dtype=torch.int8), torch.ones(32, 1).half())
    )
    with torch.inference_mode():
        assert weight.matmul(x)[0, :4].tolist() == [127.0, -63.0, 0.0, 1.0]


def test_a_rows_result_depends_on_neither_its_batch_nor_the_threads() -> None:
    weight = BlockWeight.of(q4("Q4_1", rows=300, blocks=5, seed=3))
    head = BlockWeight.of_q8_0(q8(rows=300, blocks=5, seed=4))
    x = torch.randn(9, 160, generator=torch.Generator().manual_seed(5))  # tiles of 4, then 1
    for matrix in (weight, head):
        with torch.inference_mode():
            with torch_threads(2):
                together = matrix.matmul(x)
            with torch_threads(1):
                alone = torch.cat([matrix.matmul(x[i : i + 1]) for i in range(9)])
        assert torch.equal(together, alone)


def test_a_non_finite_activation_gives_non_finite_outputs_not_garbage() -> None:
    weight = BlockWeight.of(q4("Q4_1", rows=16, blocks=2))
    x = torch.randn(2, 64)
    x[0, 40] = float("nan")
    x[1, 3] = float("inf")
    with torch.inference_mode():
        out = weight.matmul(x)
    assert out.isnan().all(), "NaN, as float32 maths would give for inf * w + ... - ..."


def test_tiny_activations_round_like_any_others() -> None:
    """A block whose step ``max|x| / 127`` is subnormal: ``1 / step`` would overflow."""
    weight = BlockWeight.of_q8_0(
        Q8Matrix(torch.eye(32, dtype=torch.int8), torch.ones(32, 1).half())
    )
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1] = 1e-39, -5e-40
    with torch.inference_mode():
        got = weight.matmul(x)
    assert torch.equal(got, rounded_activations(x))
    assert got.isfinite().all()
    torch.testing.assert_close(got[0, :2], x[0, :2], rtol=1e-2, atol=0.0)  # not zeroed


def test_bad_shapes_are_errors_not_crashes() -> None:
    weight = BlockWeight.of(q4("Q4_1", rows=16, blocks=2))
    ops = torch.ops.promptcache_blocks
    with torch.inference_mode(), pytest.raises(RuntimeError, match="columns"):
        weight.matmul(torch.randn(1, 96))
    with torch.inference_mode(), pytest.raises(RuntimeError, match="data must be"):
        ops.q4_1_linear(
            torch.randn(1, 64), weight.data[:, :, :5], weight.scales, weight.minimums, 16
        )
    with torch.inference_mode(), pytest.raises(RuntimeError, match="do not fill"):
        ops.q4_1_linear(torch.randn(1, 64), weight.data, weight.scales, weight.minimums, 17)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="scales must be"):
        ops.q8_0_linear(torch.randn(1, 64), weight.data, weight.scales.float(), 16)
    assert not BlockWeight.fits(16, 48), "whole blocks of 32 only"


def test_a_tile_holds_groups_of_four_weights_of_eight_rows() -> None:
    generator = torch.Generator().manual_seed(3)
    nibbles = torch.randint(0, 16, (9, 64), dtype=torch.uint8, generator=generator)
    tiled = tile_q4(nibbles)
    assert tiled.shape == (2, 2, 128), "9 rows: two tiles of 8, two blocks"
    for row, block, k, j in [(0, 0, 0, 0), (5, 1, 3, 2), (7, 0, 2, 3), (8, 1, 1, 1)]:
        byte = int(tiled[row // 8, block, 32 * k + 4 * (row % 8) + j])
        assert byte & 0x0F == int(nibbles[row, 32 * block + 4 * k + j])
        assert byte >> 4 == int(nibbles[row, 32 * block + 16 + 4 * k + j])
    assert not tiled[1, :, 4:32].any(), "rows 9..15 of the last tile are zero padding"

    values = torch.randint(-128, 128, (9, 64), dtype=torch.int8, generator=generator)
    bytes_ = tile_q8(values)
    assert bytes_.shape == (2, 2, 256)
    assert int(bytes_[0, 1, 32 * 6 + 4 * 3 + 1]) == int(values[3, 32 + 4 * 6 + 1])
    scales = torch.rand(9, 2, generator=generator).half()
    assert torch.equal(tile_scales(scales)[1, 1, 0], scales[8, 1])


@pytest.mark.parametrize("keys", [1, 7, 8, 300])
def test_decode_attention_is_one_querys_softmax_attention_with_its_kv_written(keys: int) -> None:
    heads, kv_heads, dim, capacity = 9, 3, 64, 320
    generator = torch.Generator().manual_seed(keys)
    kv = torch.randn(2, kv_heads, capacity, dim, generator=generator)
    qk = torch.randn(heads + kv_heads, dim, generator=generator) * 2
    value = torch.randn(kv_heads, dim, generator=generator)
    position = keys - 1
    with torch.inference_mode():
        got = torch.ops.promptcache_blocks.decode_attention(qk, value, kv, position, dim**-0.5)
    assert torch.equal(kv[0, :, position], qk[heads:]) and torch.equal(kv[1, :, position], value)
    q = qk[:heads].view(kv_heads, heads // kv_heads, dim)
    scores = torch.bmm(q, kv[0, :, :keys].transpose(1, 2)) * dim**-0.5
    want = torch.bmm(torch.softmax(scores, -1), kv[1, :, :keys]).reshape(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(9, 3, 64), (8, 2, 40), (4, 4, 16)])
def test_a_batchs_attention_is_each_rows_own_bitwise(heads: int, kv_heads: int, dim: int) -> None:
    """One work-shared call over (row, KV head) pairs gives each row what it gets alone;
    head sizes past and short of the 16 columns a pass holds in registers."""
    generator = torch.Generator().manual_seed(dim)
    positions = [0, 40, 700]  # past the size where one row alone is split by heads
    buffers = [torch.randn(2, kv_heads, 720, dim, generator=generator) for _ in positions]
    alone = [buffer.clone() for buffer in buffers]
    qkv = torch.randn(len(positions), (heads + 2 * kv_heads) * dim, generator=generator)
    ops = torch.ops.promptcache_blocks
    with torch.inference_mode():
        got = ops.decode_attention_rows(qkv, buffers, positions, heads, kv_heads, 0.125)
        for row, (kv, position) in enumerate(zip(alone, positions, strict=True)):
            parts = qkv[row].view(heads + 2 * kv_heads, dim)
            want = ops.decode_attention(
                parts[: heads + kv_heads].contiguous(),
                parts[heads + kv_heads :].contiguous(),
                kv,
                position,
                0.125,
            )
            assert torch.equal(got[row], want), f"row {row}"
            assert torch.equal(buffers[row], kv), "the key and value written alike"
    q = qkv[2].view(-1, dim)[:heads].view(kv_heads, heads // kv_heads, dim)
    scores = torch.bmm(q, buffers[2][0, :, :701].transpose(1, 2)) * 0.125
    reference = torch.bmm(torch.softmax(scores, -1), buffers[2][1, :, :701]).reshape(-1)
    torch.testing.assert_close(got[2], reference, rtol=1e-5, atol=1e-6)


def test_decode_attention_refuses_a_position_outside_the_buffer() -> None:
    kv = torch.zeros(2, 1, 4, 8)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside the KV buffer"):
        torch.ops.promptcache_blocks.decode_attention(
            torch.zeros(2, 8), torch.zeros(1, 8), kv, 4, 1.0
        )
    assert torch.equal(kv, torch.zeros(2, 1, 4, 8)), "nothing written"


def test_decode_attention_propagates_nan_as_softmax_does() -> None:
    kv = torch.randn(2, 1, 16, 8)
    qk = torch.randn(2, 8)
    qk[0, 0] = float("nan")
    with torch.inference_mode():
        out = torch.ops.promptcache_blocks.decode_attention(qk, torch.randn(1, 8), kv, 9, 1.0)
    assert out.isnan().all()


def test_auto_picks_vnni_exactly_where_the_cpu_has_it(isa: str) -> None:
    assert isa in ("avx2", "avx512-vnni")
    assert kernel_isa("auto") == ("avx512-vnni" if HAS_VNNI else "avx2")
    assert kernel_isa("") == kernel_isa(), "'' only asks"


def test_an_unknown_or_missing_instruction_set_is_refused() -> None:
    with pytest.raises(RuntimeError, match="kernel_isa takes"):
        kernel_isa("avx10")
    if not HAS_VNNI:
        with pytest.raises(RuntimeError, match="lacks AVX-512 VNNI"):
            kernel_isa("avx512-vnni")


@needs_vnni
@pytest.mark.parametrize("blocks", [1, 2, 3, 18, 48])
@pytest.mark.parametrize("batch", [1, 3, 4, 9])
@pytest.mark.parametrize("rows", [29, 20, 8])
def test_vnni_gives_bitwise_the_avx2_results(blocks: int, batch: int, rows: int) -> None:
    """VNNI runs two tiles a pass (512-bit) for 2 activation rows or more: 29 weight
    rows are two pairs (the last tile partial), 20 a pair and a single tile, 8 one tile
    alone; a batch of 1 takes single tiles."""
    x = torch.randn(batch, 32 * blocks, generator=torch.Generator().manual_seed(blocks)) * 3
    matrices = [BlockWeight.of(q4("Q4_1", rows, blocks)), BlockWeight.of_q8_0(q8(rows, blocks))]
    got: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for chosen in ("avx2", "avx512-vnni"):
            kernel_isa(chosen)
            assert torch.ops.promptcache_blocks.kernel_isa("") == chosen, "really switched"
            got[chosen] = [weight.matmul(x) for weight in matrices]
    for avx2, vnni in zip(got["avx2"], got["avx512-vnni"], strict=True):
        assert torch.equal(avx2, vnni)


@needs_vnni
@pytest.mark.parametrize("keys", [5, 16, 43, 300])
@pytest.mark.parametrize("dim", [64, 40])
def test_vnni_attention_gives_bitwise_the_avx2_results(keys: int, dim: int) -> None:
    """The wide attention (query-pair scores, 32- and 16-column weighted values) does each
    lane's AVX2 arithmetic: a prompt token or a step computes the same on either ISA."""
    generator = torch.Generator().manual_seed(keys + dim)
    rows, heads, kv_heads = 3, 6, 2
    base = torch.randn(2, kv_heads, keys + 4, dim, generator=generator)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, generator=generator)
    positions = [keys - 1 - row for row in range(rows)]
    got: dict[str, torch.Tensor] = {}
    for chosen in ("avx2", "avx512-vnni"):
        kernel_isa(chosen)
        buffers = [base.clone() for _ in range(rows)]
        got[chosen] = torch.ops.promptcache_blocks.decode_attention_rows(
            qkv, buffers, positions, heads, kv_heads, 0.125
        )
    assert torch.equal(got["avx2"], got["avx512-vnni"])


@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim"), [(9, 3, 64), (8, 2, 40), (4, 4, 64), (14, 2, 48)]
)
@pytest.mark.parametrize(("start", "rows"), [(0, 1), (0, 29), (13, 8), (300, 21)])
def test_a_prompt_chunks_rows_attend_bitwise_as_each_row_alone(
    heads: int, kv_heads: int, dim: int, start: int, rows: int
) -> None:
    """Rows of one sequence at consecutive positions (a prompt chunk) attend in blocks
    that share their key and value loads; each row's result is still bitwise what it
    gets alone, so how a prompt was cut into chunks never changes a token's KV."""
    generator = torch.Generator().manual_seed(start + rows + heads + dim)
    kv = torch.randn(2, kv_heads, start + rows + 5, dim, generator=generator)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, generator=generator)
    positions = list(range(start, start + rows))
    attend = torch.ops.promptcache_blocks.decode_attention_rows
    together = attend(qkv, [kv] * rows, positions, heads, kv_heads, dim**-0.5)
    for row, position in enumerate(positions):
        alone = attend(qkv[row : row + 1], [kv.clone()], [position], heads, kv_heads, dim**-0.5)
        assert torch.equal(alone[0], together[row]), f"row {row} at position {position}"


@needs_vnni
@pytest.mark.parametrize(("start", "rows"), [(0, 40), (250, 13)])
def test_vnni_prompt_chunk_attention_gives_bitwise_the_avx2_results(start: int, rows: int) -> None:
    """The wide kernels' row blocks (query pairs, 12 queries a value pass) against AVX2's
    one row at a time: the same bits for a prompt chunk on either ISA."""
    generator = torch.Generator().manual_seed(start + rows)
    heads, kv_heads, dim = 9, 3, 64
    base = torch.randn(2, kv_heads, start + rows + 2, dim, generator=generator)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, generator=generator)
    positions = list(range(start, start + rows))
    got: dict[str, torch.Tensor] = {}
    for chosen in ("avx2", "avx512-vnni"):
        kernel_isa(chosen)
        kv = base.clone()
        got[chosen] = torch.ops.promptcache_blocks.decode_attention_rows(
            qkv, [kv] * rows, positions, heads, kv_heads, 0.125
        )
    assert torch.equal(got["avx2"], got["avx512-vnni"])
