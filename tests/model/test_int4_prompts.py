"""``int4`` prompts: prompt tokens through the decode step's fused GGUF-block layers.

What the cache relies on (a hit's suffix, computed after restored KV, equals the same
tokens inside the miss's chunk) holds bitwise here, and a prompt token is computed
exactly as a generated token would be. The embedded model is a Q4_1 GGUF.
"""

from __future__ import annotations

import pytest
import torch

from promptcache.model.block_kernels import block_kernels
from promptcache.model.loading import LoadedModel
from promptcache.model.runtime import LlamaRuntime

pytestmark = pytest.mark.skipif(not block_kernels(), reason="the GGUF block kernels do not run")

TEXT = (
    "The lighthouse keeper climbed the stairs every evening to light the lamp. Ships "
    "passed the rocks safely because of him, and the town remembered his name for years."
)


def prompt_ids(model: LoadedModel, repeat: int = 5) -> list[int]:
    ids = model.tokenizer(TEXT * repeat)["input_ids"]
    return [int(token) for token in ids]


def int4_runtime(model: LoadedModel) -> LlamaRuntime:
    runtime = LlamaRuntime(model.weights, decode_precision="int4", prefill_precision="int4")
    assert runtime.prefill_precision == "int4"
    return runtime


@pytest.mark.parametrize(("split", "chunk_size"), [(1, 512), (17, 512), (64, 23), (100, 7)])
def test_a_prompts_kv_and_logits_do_not_depend_on_how_it_was_cut(
    embedded_model: LoadedModel, split: int, chunk_size: int
) -> None:
    runtime = int4_runtime(embedded_model)
    ids = prompt_ids(embedded_model)
    whole, cut = runtime.new_kv(len(ids)), runtime.new_kv(len(ids))
    want = runtime.prefill(ids, whole, 0)
    runtime.prefill(ids[:split], cut, 0, chunk_size=chunk_size)
    got = runtime.prefill(ids[split:], cut, split, chunk_size=chunk_size)
    assert torch.equal(whole, cut)
    assert torch.equal(got, want)


def test_a_prompt_token_is_computed_as_a_decode_step_computes_it(
    embedded_model: LoadedModel,
) -> None:
    runtime = int4_runtime(embedded_model)
    ids = prompt_ids(embedded_model, repeat=1)
    prompt, stepped = runtime.new_kv(len(ids)), runtime.new_kv(len(ids))
    runtime.prefill(ids, prompt, 0)
    runtime.prefill(ids[:-1], stepped, 0)
    runtime.step(ids[-1], stepped, len(ids) - 1)
    assert torch.equal(prompt, stepped)


def test_int4_prompts_are_close_to_float32_ones(embedded_model: LoadedModel) -> None:
    """The 8-bit activation rounding of the blocks (as llama.cpp's prompts have it)."""
    fast = int4_runtime(embedded_model)
    exact = LlamaRuntime(embedded_model.weights)
    ids = prompt_ids(embedded_model)
    kv_fast, kv_exact = fast.new_kv(len(ids)), exact.new_kv(len(ids))
    got = fast.prefill(ids, kv_fast, 0)
    want = exact.prefill(ids, kv_exact, 0)
    assert float((got - want).norm() / want.norm()) < 0.05
    assert int(got.argmax()) == int(want.argmax())
    assert float((kv_fast - kv_exact).norm() / kv_exact.norm()) < 0.05


def test_auto_is_int4_only_where_the_fused_layers_take_the_kv(
    embedded_model: LoadedModel,
) -> None:
    weights = embedded_model.weights
    assert (
        LlamaRuntime(weights, decode_precision="int4", prefill_precision="auto").prefill_precision
        == "int4"
    )
    # A 16-bit KV or float16 decode weights: no fused layers, so the earlier choice.
    half_kv = LlamaRuntime(
        weights, decode_precision="int4", prefill_precision="auto", kv_dtype=torch.float16
    )
    assert half_kv.prefill_precision in ("bfloat16", "float32")
    assert (
        LlamaRuntime(
            weights, decode_precision="float16", prefill_precision="auto"
        ).prefill_precision
        != "int4"
    )
    with pytest.raises(ValueError, match="float32 KV"):
        LlamaRuntime(
            weights, decode_precision="int4", prefill_precision="int4", kv_dtype=torch.float16
        )
    with pytest.raises(ValueError, match="decode_precision int4"):
        LlamaRuntime(weights, decode_precision="float16", prefill_precision="int4")


def test_an_int4_prompt_into_a_16_bit_kv_buffer_is_refused(embedded_model: LoadedModel) -> None:
    runtime = int4_runtime(embedded_model)
    kv = runtime.new_kv(16, dtype=torch.float16)
    with pytest.raises(ValueError, match="float32 KV"):
        runtime.prefill([1, 2, 3], kv, 0)


def test_chunks_of_several_sequences_in_one_forward_are_each_as_alone(
    embedded_model: LoadedModel,
) -> None:
    """forward_chunks runs several requests' prompt chunks as rows of one call: each
    sequence's KV and last logits are bitwise those of its own forward."""
    runtime = int4_runtime(embedded_model)
    ids = prompt_ids(embedded_model, repeat=2)
    spans = [(0, 9), (5, 40), (0, 1), (30, 64)]  # (start, end): fresh prompts and suffixes
    alone, together = [], []
    for start, end in spans:
        kv = runtime.new_kv(len(ids))
        if start:
            runtime.prefill(ids[:start], kv, 0)
        together.append(kv.clone())
        alone.append((kv, runtime.forward(ids[start:end], kv, start)))
    chunks = [
        (torch.tensor(ids[start:end]), kv, start)
        for (start, end), kv in zip(spans, together, strict=True)
    ]
    logits = runtime.forward_chunks(chunks)
    for (kv, want), got_kv, got in zip(alone, together, logits, strict=True):
        assert torch.equal(got_kv, kv)
        assert torch.equal(got, want)
