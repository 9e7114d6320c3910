"""int4 decode from a GGUF's own blocks: reading them, the kernel's convention, batching.

The block reader is checked against the float32 conversion transformers makes of
the same file (bitwise), the packed matrices against the kernel's documented
de-quantisation ``(q - 8) * scale + zero``, and decoding against the exact
weights (close logits, same greedy start) and against itself batched (each row
of the int4 matmuls is what the step alone computes, bit for bit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.model import gguf_blocks
from promptcache.model.block_weights import BlockWeight
from promptcache.model.gguf_blocks import QuantizedMatrix, read_gguf_matrices
from promptcache.model.loading import LoadedModel
from promptcache.model.quantized import Int4Weight, int4_kernels_work, quantized_decode_works
from promptcache.model.runtime import LlamaRuntime

pytestmark = pytest.mark.skipif(not quantized_decode_works(), reason="no int4 kernels here")
torch_int4 = pytest.mark.skipif(not int4_kernels_work(), reason="no CPU int4 kernels in torch")


def random_matrix(kind: str, rows: int = 64, cols: int = 96, seed: int = 0) -> QuantizedMatrix:
    generator = torch.Generator().manual_seed(seed)
    scales = (torch.rand(rows, cols // 32, generator=generator) * 0.02 + 0.001).half()
    minimums = None
    if kind == "Q4_1":
        minimums = (-8 * scales.float() * torch.rand(rows, cols // 32, generator=generator)).half()
    nibbles = torch.randint(0, 16, (rows, cols), dtype=torch.uint8, generator=generator)
    return QuantizedMatrix(kind, nibbles, scales, minimums)


@torch_int4
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_packed_weights_follow_the_kernels_scale_and_zero_convention(kind: str) -> None:
    matrix = random_matrix(kind)
    weight = Int4Weight.of(matrix)
    rows, cols = matrix.shape
    scale = matrix.scales.float()
    zero = (
        torch.zeros_like(scale) if matrix.minimums is None else matrix.minimums.float() + 8 * scale
    )
    # (q - 8) * bf16(d) + bf16(zero): the nibbles exact, scale and zero rounded to bfloat16.
    expected = (matrix.nibbles.float().view(rows, -1, 32) - 8) * scale.bfloat16().float()[
        ..., None
    ] + zero.bfloat16().float()[..., None]
    with torch.inference_mode():
        got = weight.dequantize()
    torch.testing.assert_close(got, expected.view(rows, cols), rtol=4e-3, atol=1e-6)
    exact = matrix.dequantize()
    relative = float((got - exact).norm() / exact.norm())
    assert relative < 5e-3, "bfloat16 scales move the weights by well under 1%"


@torch_int4
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_int4_linear_matches_the_exact_weights_up_to_bfloat16_rounding(kind: str) -> None:
    matrix = random_matrix(kind, seed=1)
    x = torch.randn(5, matrix.shape[1], generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got = Int4Weight.of(matrix).linear(x, None)
    want = x @ matrix.dequantize().T
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert float((got - want).norm() / want.norm()) < 1e-2


@torch_int4
def test_each_row_of_an_int4_matmul_is_independent_of_the_batch() -> None:
    weight = Int4Weight.of(random_matrix("Q4_1", rows=192, cols=128, seed=3))
    x = torch.randn(9, 128, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        batch = weight.linear(x, None)
        alone = torch.cat([weight.linear(x[i : i + 1], None) for i in range(9)])
    assert torch.equal(batch, alone)


@torch_int4
def test_a_matrix_the_kernel_cannot_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit the int4 kernel"):
        Int4Weight.of(random_matrix("Q4_1", rows=40, cols=64))


def test_gguf_blocks_dequantise_to_the_converted_weights_bitwise(
    embedded_model: LoadedModel,
) -> None:
    gguf = embedded_model.weights.gguf
    assert gguf is not None and gguf.suffix == ".gguf"
    matrices = read_gguf_matrices(gguf, embedded_model.config)
    layers = int(embedded_model.config.num_hidden_layers)
    assert len(matrices) == 7 * layers, "every projection of every layer is Q4_1 in this file"
    assert {m.format for m in matrices.values()} == {"Q4_1"}
    tensors = embedded_model.weights.tensors
    for index in (0, layers - 1):
        for name, matrix in matrices.items():
            if name.startswith(f"model.layers.{index}."):
                assert torch.equal(matrix.dequantize(), tensors[name].to(torch.float32)), name


def test_a_wrong_row_order_is_caught_before_decoding(
    embedded_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptcache.model import precision

    monkeypatch.setattr(precision, "_PACKED", {})
    monkeypatch.setattr(gguf_blocks, "_unpermuted_rows", lambda rows, heads: torch.arange(rows))
    with pytest.raises(ValueError, match="do not de-quantise"):
        LlamaRuntime(embedded_model.weights, decode_precision="int4")


def test_int4_needs_a_gguf_and_auto_falls_back_to_float16(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match=r"'int4' is not available.*GGUF"):
        LlamaRuntime(tiny_model.weights, decode_precision="int4")
    assert LlamaRuntime(tiny_model.weights, decode_precision="auto").decode_precision == "float16"
    with pytest.raises(ValueError, match="decode_precision must be one of"):
        LlamaRuntime(tiny_model.weights, decode_precision="int3")


def test_a_gguf_without_4bit_layers_has_no_int4(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + bytes(16))
    assert read_gguf_matrices(tmp_path / "x.gguf", _Heads()) == {}
    (tmp_path / "y.gguf").write_bytes(b"NOPE" + bytes(20))
    with pytest.raises(ValueError, match="not a GGUF"):
        read_gguf_matrices(tmp_path / "y.gguf", _Heads())


class _Heads:
    num_attention_heads = 4
    num_key_value_heads = 2


def _chat(embedded_model: LoadedModel, text: str) -> list[int]:
    tokenizer: Any = embedded_model.tokenizer  # apply_chat_template returns a wide union
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=False
    )
    return [int(i) for i in ids]


def test_int4_decode_stays_close_to_the_exact_weights(
    embedded_model: LoadedModel, decode_backend: str
) -> None:
    exact = LlamaRuntime(embedded_model.weights)
    int4 = LlamaRuntime(embedded_model.weights, decode_precision="int4")
    assert int4.decode_precision == "int4" and int4.prefill_precision == "float32"
    kernel = BlockWeight if decode_backend == "blocks" else Int4Weight
    assert isinstance(int4._decode.layers[0].qkv_weight, kernel)
    assert int4.weight_bytes("decode") < 0.7 * exact.weight_bytes("decode")
    ids = _chat(embedded_model, "Name three colours of the rainbow.")
    kv_exact, kv_int4 = exact.new_kv(len(ids) + 8), int4.new_kv(len(ids) + 8)
    # Prompt tokens run on the prompt weights: identical in both.
    assert torch.equal(exact.prefill(ids, kv_exact, 0), int4.prefill(ids, kv_int4, 0))
    want = exact.step(ids[-1], kv_exact, len(ids))
    got = int4.step(ids[-1], kv_int4, len(ids))
    assert float((got - want).norm() / want.norm()) < 0.05
    assert int(got.argmax()) == int(want.argmax())
    assert exact.greedy(ids, 6) == int4.greedy(ids, 6)


def test_int4_batched_decode_rows_equal_steps_run_alone(
    embedded_model: LoadedModel, decode_backend: str
) -> None:
    runtime = LlamaRuntime(embedded_model.weights, decode_precision="int4")
    prompts = [_chat(embedded_model, q) for q in ("Hi!", "What is rye?", "Count to five.")]
    tokens = [100, 200, 300]
    alone, batched = [], []
    for prompt in prompts:
        kv = runtime.new_kv(len(prompt) + 4)
        runtime.prefill(prompt, kv, 0)
        alone.append(kv)
        batched.append(kv.clone())
    want = torch.stack(
        [runtime.step(t, kv, len(p)) for t, kv, p in zip(tokens, alone, prompts, strict=True)]
    )
    got = runtime.decode_batch(
        [(t, kv, len(p)) for t, kv, p in zip(tokens, batched, prompts, strict=True)]
    )
    for kv_alone, kv_batched in zip(alone, batched, strict=True):
        assert torch.equal(kv_alone, kv_batched), "int4 rows do not depend on the batch"
    # The head too runs on the int4 kernel and refines each row on its own: bit for bit.
    assert torch.equal(got, want)


def test_float16_decode_of_a_bias_free_model_stays_close(embedded_model: LoadedModel) -> None:
    """SmolLM2 has no projection biases, so a float16 step's values reach attention in
    float16 (the tiny test models' biases promote them to float32)."""
    exact = LlamaRuntime(embedded_model.weights)
    half = LlamaRuntime(embedded_model.weights, decode_precision="float16")
    ids = _chat(embedded_model, "Name a prime number.")
    kv_exact, kv_half = exact.new_kv(len(ids) + 2), half.new_kv(len(ids) + 2)
    exact.prefill(ids, kv_exact, 0)
    half.prefill(ids, kv_half, 0)
    want = exact.step(ids[-1], kv_exact, len(ids))
    got = half.step(ids[-1], kv_half, len(ids))
    assert float((got - want).norm() / want.norm()) < 0.02
    assert int(got.argmax()) == int(want.argmax())
