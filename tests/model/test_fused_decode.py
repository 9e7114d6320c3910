"""The fused decode layers (``kernels/decode_layers.cpp``): the same maths as the Python
layers (``LayerMath.decode_rows``), rows independent of their batch, used only where
every decode matrix is GGUF blocks, and bad input refused.

The two paths round differently (the norm's sum order), and an 8-bit activation block
can then round one step apart, so they are compared against each other within a
tolerance far below what a wrong operation (RoPE, a bias, a residual) would give.
"""

from __future__ import annotations

import pytest
import torch

from promptcache.model.architecture import Architecture
from promptcache.model.block_kernels import block_kernels
from promptcache.model.block_weights import BlockWeight
from promptcache.model.fused_decode import fused_decode_layers
from promptcache.model.layers import LayerMath
from promptcache.model.loading import LoadedModel
from promptcache.model.rope import RopeTable
from promptcache.model.runtime import LlamaRuntime
from promptcache.model.weights import LayerWeights
from tests.model.block_matrices import q4, q8

pytestmark = pytest.mark.skipif(not block_kernels(), reason="no GGUF block kernels here")

ARCH = Architecture(
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    hidden=128,
    intermediate=192,
    eps=1e-5,
    max_positions=0,
    window=None,
)


def random_layer(seed: int, *, biases: bool) -> LayerWeights:
    """A layer of mixed Q4_1 / Q8_0 blocks (as GGUFs mix them), with or without biases."""
    g = torch.Generator().manual_seed(seed)
    qkv = (ARCH.num_heads + 2 * ARCH.num_kv_heads) * ARCH.head_dim
    hidden, attention, intermediate = (
        ARCH.hidden // 32,
        ARCH.num_heads * ARCH.head_dim // 32,
        ARCH.intermediate // 32,
    )

    def bias(size: int) -> torch.Tensor | None:
        return torch.randn(size, generator=g) * 0.1 if biases else None

    return LayerWeights(
        input_norm=1 + 0.1 * torch.randn(ARCH.hidden, generator=g),
        qkv_weight=BlockWeight.of(q4("Q4_1", qkv, hidden, 4 * seed)),
        qkv_bias=bias(qkv),
        o_weight=BlockWeight.of_q8_0(q8(ARCH.hidden, attention, 4 * seed + 1)),
        o_bias=bias(ARCH.hidden),
        post_norm=1 + 0.1 * torch.randn(ARCH.hidden, generator=g),
        gate_up_weight=BlockWeight.of(q4("Q4_1", 2 * ARCH.intermediate, hidden, 4 * seed + 2)),
        gate_up_bias=bias(2 * ARCH.intermediate),
        down_weight=BlockWeight.of_q8_0(q8(ARCH.hidden, intermediate, 4 * seed + 3)),
        down_bias=bias(ARCH.hidden),
    )


def new_buffers(layers: int, positions: list[int], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (layers, 2, ARCH.num_kv_heads, max(positions) + 4, ARCH.head_dim)
    return [torch.randn(shape, generator=g) for _ in positions]


def python_layers(
    layers: list[LayerWeights],
    x: torch.Tensor,
    buffers: list[torch.Tensor],
    positions: list[int],
    rope: RopeTable,
) -> torch.Tensor:
    math = LayerMath(ARCH, torch.float32, onednn=False)
    cos, sin = rope.at(positions)
    for number, layer in enumerate(layers):
        x = math.decode_rows(x, layer, [kv[number] for kv in buffers], positions, cos, sin)
    return x


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.fixture
def rope() -> RopeTable:
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=ARCH.hidden,
        num_attention_heads=ARCH.num_heads,
        num_key_value_heads=ARCH.num_kv_heads,
    )
    return RopeTable(config, ARCH.head_dim, torch.float32)


@pytest.mark.parametrize("biases", [False, True])
def test_fused_layers_compute_what_the_python_layers_do(rope: RopeTable, biases: bool) -> None:
    layers = [random_layer(seed, biases=biases) for seed in range(3)]
    fused = fused_decode_layers(layers, ARCH, torch.float32)
    assert fused is not None
    positions = [5, 17, 40]
    x = torch.randn(3, ARCH.hidden, generator=torch.Generator().manual_seed(9))
    python_kv, fused_kv = new_buffers(3, positions, 1), new_buffers(3, positions, 1)
    with torch.inference_mode():
        want = python_layers(layers, x, python_kv, positions, rope)
        cos, sin = rope.at(positions)
        got = fused.forward(x, fused_kv, positions, cos, sin)
    assert relative(got, want) < 2e-3
    for kv_python, kv_fused in zip(python_kv, fused_kv, strict=True):
        assert relative(kv_fused, kv_python) < 1e-4, "each layer's key and value written"


def test_a_fused_rows_result_depends_only_on_its_own_sequence(rope: RopeTable) -> None:
    layers = [random_layer(seed, biases=True) for seed in range(2)]
    fused = fused_decode_layers(layers, ARCH, torch.float32)
    assert fused is not None
    positions = [3, 30, 11, 7, 21]
    x = torch.randn(5, ARCH.hidden, generator=torch.Generator().manual_seed(4))
    together, alone = new_buffers(2, positions, 2), new_buffers(2, positions, 2)
    with torch.inference_mode():
        cos, sin = rope.at(positions)
        batched = fused.forward(x, together, positions, cos, sin)
        for row, position in enumerate(positions):
            cos_row, sin_row = rope.span(position, position + 1)
            one = fused.forward(x[row : row + 1], [alone[row]], [position], cos_row, sin_row)
            assert torch.equal(one[0], batched[row])
    assert all(torch.equal(a, b) for a, b in zip(together, alone, strict=True))


def test_bad_input_is_an_error_not_a_crash(rope: RopeTable) -> None:
    fused = fused_decode_layers([random_layer(0, biases=False)], ARCH, torch.float32)
    assert fused is not None
    x = torch.randn(1, ARCH.hidden)
    kv = new_buffers(1, [4], 0)
    cos, sin = rope.span(4, 5)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="position"):
            fused.forward(x, kv, [kv[0].shape[3]], cos, sin)  # past the buffer's end
        with pytest.raises(RuntimeError, match="one KV buffer and one position a row"):
            fused.forward(x, kv, [4, 5], cos, sin)
        with pytest.raises(RuntimeError, match="KV buffer"):
            fused.forward(x, [kv[0].half()], [4], cos, sin)
        with pytest.raises(RuntimeError, match="x must be"):
            fused.forward(torch.randn(1, 64), kv, [4], cos, sin)


def test_only_all_block_layers_on_float32_are_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = random_layer(0, biases=False)
    assert fused_decode_layers([layer], ARCH, torch.float32) is not None
    assert fused_decode_layers([layer], ARCH, torch.bfloat16) is None
    dense = LayerWeights(**{**vars(layer), "o_weight": layer.o_weight.dequantize()})
    assert fused_decode_layers([layer, dense], ARCH, torch.float32) is None
    monkeypatch.setenv("PROMPTCACHE_FUSED_DECODE", "0")
    assert fused_decode_layers([layer], ARCH, torch.float32) is None


def test_the_embedded_models_int4_decode_is_fused_and_matches_the_python_layers(
    embedded_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fused = LlamaRuntime(embedded_model.weights, decode_precision="int4")
    monkeypatch.setenv("PROMPTCACHE_FUSED_DECODE", "0")
    python = LlamaRuntime(embedded_model.weights, decode_precision="int4")
    assert fused._fused_decode is not None and python._fused_decode is None
    ids = list(range(200, 240))
    kv_fused, kv_python = fused.new_kv(len(ids) + 2), python.new_kv(len(ids) + 2)
    fused.prefill(ids, kv_fused, 0)
    python.prefill(ids, kv_python, 0)
    got = fused.step(ids[-1], kv_fused, len(ids))
    want = python.step(ids[-1], kv_python, len(ids))
    assert relative(got, want) < 0.02
    assert int(got.argmax()) == int(want.argmax())
