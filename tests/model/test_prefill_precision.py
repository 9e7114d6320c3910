"""Prompt weights by role: a prompt token always goes through the prompt weights -- in a
long miss chunk, in a short suffix after a hit, or alone (a full hit recomputes its last
token) -- and a generated one through the decode weights, so a cache hit computes every
token as the miss did. The engine prefills in float32; the runtime's bfloat16 prompt
weights (for measuring) stay close to it and keep the KV in float32.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from promptcache.model import precision
from promptcache.model.loading import LoadedModel
from promptcache.model.precision import bfloat16_matmuls_supported
from promptcache.model.runtime import LlamaRuntime

PROMPT = [*range(3, 60), 7, 7, 100, 200, 150, 3]
needs_bf16 = pytest.mark.skipif(
    not bfloat16_matmuls_supported(), reason="no oneDNN bfloat16 matmuls on this CPU"
)


def roles(runtime: LlamaRuntime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The precision of the weights each forward of ``runtime`` runs on, as they run
    (prompt forwards, and decode steps alone or batched)."""
    seen: list[str] = []
    real = runtime._forward

    def spy(ids: torch.Tensor, kv: torch.Tensor, start: int, weights: Any, **kw: Any) -> Any:
        seen.append(weights.precision)
        return real(ids, kv, start, weights, **kw)

    def decode_spy(*args: Any) -> Any:
        seen.append(runtime.decode_precision)
        return decode_rows(*args)

    decode_rows = runtime._decode_rows
    monkeypatch.setattr(runtime, "_forward", spy)
    monkeypatch.setattr(runtime, "_decode_rows", decode_spy)
    return seen


@needs_bf16
def test_bfloat16_prefill_is_close_to_float32_and_keeps_the_kv_dtype(
    tiny_model: LoadedModel,
) -> None:
    exact = LlamaRuntime(tiny_model.weights)
    fast = LlamaRuntime(tiny_model.weights, prefill_precision="bfloat16")
    assert fast.prefill_precision == "bfloat16" and fast.decode_precision == "float32"
    kv_exact, kv_fast = exact.new_kv(80), fast.new_kv(80)
    want = exact.prefill(PROMPT, kv_exact, 0)
    got = fast.prefill(PROMPT, kv_fast, 0)
    assert got.dtype == torch.float32 and kv_fast.dtype == torch.float32
    assert float((got - want).norm() / want.norm()) < 2e-2
    assert int(got.argmax()) == int(want.argmax())
    assert float((kv_fast - kv_exact).norm() / kv_exact.norm()) < 2e-2


@needs_bf16
def test_prompt_tokens_take_the_prompt_weights_however_few_and_steps_the_decode_ones(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = LlamaRuntime(
        tiny_model.weights, prefill_precision="bfloat16", decode_precision="float16"
    )
    seen = roles(runtime, monkeypatch)
    kv = runtime.new_kv(80)
    runtime.prefill(PROMPT, kv, 0, chunk_size=31)  # 31, 31 and a last chunk of one
    runtime.forward([5], kv, len(PROMPT))  # a full hit recomputes its last token alone
    runtime.step(6, kv, len(PROMPT) + 1)
    runtime.decode_batch([(7, kv, len(PROMPT) + 2)])
    assert seen == ["bfloat16"] * 4 + ["float16", "float16"]


def test_without_bfloat16_matmuls_bfloat16_prefill_is_refused(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LlamaRuntime(tiny_model.weights).prefill_precision == "float32"
    monkeypatch.setattr(precision, "bfloat16_matmuls_supported", lambda: False)
    with pytest.raises(ValueError, match="prefill_precision 'bfloat16' is not available"):
        LlamaRuntime(tiny_model.weights, prefill_precision="bfloat16")
    with pytest.raises(ValueError, match="prefill_precision must be one of"):
        LlamaRuntime(tiny_model.weights, prefill_precision="float8")


@needs_bf16
@pytest.mark.parametrize("split", [1, 20, 33, 64, 65])
def test_a_bfloat16_prompt_tokens_kv_does_not_depend_on_how_the_prompt_was_cut(
    tiny_model: LoadedModel, split: int
) -> None:
    """What a cache hit relies on: a suffix computed after restored KV equals the same
    tokens computed inside the miss's chunk, bit for bit (fixed-size matmul tiles)."""
    runtime = LlamaRuntime(tiny_model.weights, prefill_precision="bfloat16")
    prompt = (PROMPT * 2)[:80]
    whole, cut = runtime.new_kv(96), runtime.new_kv(96)
    want = runtime.prefill(prompt, whole, 0)
    runtime.prefill(prompt[:split], cut, 0)
    got = runtime.prefill(prompt[split:], cut, split)
    assert torch.equal(whole, cut)
    assert torch.equal(got, want)


def test_auto_prompt_precision_is_decided_once_per_process(tiny_model: LoadedModel) -> None:
    """Two engines of a process that chose differently would compute one prompt two ways
    (a hit on one would not match a miss on the other): the timing is done once."""
    first = LlamaRuntime(tiny_model.weights, prefill_precision="auto")
    assert first.prefill_precision in ("bfloat16", "float32")
    if not bfloat16_matmuls_supported():
        assert first.prefill_precision == "float32"
        return
    timed = precision._bfloat16_tiles_faster.cache_info()
    second = LlamaRuntime(tiny_model.weights, prefill_precision="auto")
    assert second.prefill_precision == first.prefill_precision
    after = precision._bfloat16_tiles_faster.cache_info()
    assert after.misses == timed.misses and after.hits == timed.hits + 1
