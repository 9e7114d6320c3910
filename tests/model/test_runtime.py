"""LlamaRuntime against the Hugging Face model it reads: same logits, same KV, same greedy text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel

from promptcache.model.loading import LoadedModel
from promptcache.model.runtime import LlamaRuntime

PROMPT = [*range(3, 40), 7, 7, 7, 100, 200, 150, 3]


def hf_logits(model: PreTrainedModel, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        logits: torch.Tensor = model(torch.tensor([ids])).logits[0]
    return logits


def hf_kv(model: PreTrainedModel, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    with torch.inference_mode():
        cache = model(torch.tensor([ids]), use_cache=True).past_key_values
    return [(layer.keys[0], layer.values[0]) for layer in cache.layers]


def hf_greedy(model: Any, ids: list[int], count: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=count,
            min_new_tokens=count,
            do_sample=False,
        )
    return [int(t) for t in out[0, len(ids) :]]


def assert_close_logits(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * max(scale, 1.0))


@pytest.mark.parametrize("onednn", [True, False])
def test_all_logits_match_hf_forward(tiny_model: LoadedModel, onednn: bool) -> None:
    runtime = LlamaRuntime(tiny_model.model, use_onednn=onednn)
    got = runtime.forward(PROMPT, runtime.new_kv(64), 0, all_logits=True)
    assert got.shape == (len(PROMPT), runtime.vocab_size)
    assert_close_logits(got, hf_logits(tiny_model.model, PROMPT))


def test_last_token_logits_by_default(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    got = runtime.forward(PROMPT, runtime.new_kv(64), 0)
    assert got.shape == (runtime.vocab_size,)
    assert_close_logits(got, hf_logits(tiny_model.model, PROMPT)[-1])


def test_kv_written_equals_hf_past_key_values(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    kv = runtime.new_kv(64)
    runtime.prefill(PROMPT, kv, 0, chunk_size=5)
    n = len(PROMPT)
    for layer, (keys, values) in enumerate(hf_kv(tiny_model.model, PROMPT)):
        torch.testing.assert_close(kv[layer, 0, :, :n], keys, rtol=0, atol=1e-5)
        torch.testing.assert_close(kv[layer, 1, :, :n], values, rtol=0, atol=1e-5)
    assert not kv[:, :, :, n:].any(), "positions past the prompt must stay untouched"


def test_chunked_prefill_matches_one_pass_and_token_by_token(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    results = []
    for chunk_size in (len(PROMPT), 7, 1):
        kv = runtime.new_kv(64)
        results.append((runtime.prefill(PROMPT, kv, 0, chunk_size=chunk_size), kv))
    (one_logits, one_kv), *others = results
    for logits, kv in others:
        assert int(logits.argmax()) == int(one_logits.argmax())
        torch.testing.assert_close(logits, one_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(kv, one_kv, rtol=0, atol=1e-5)


def test_restored_prefix_then_extension_matches_full_prefill(tiny_model: LoadedModel) -> None:
    """The prefix-cache path: copy a prefix's KV into a fresh buffer, run only the rest."""
    runtime = LlamaRuntime(tiny_model.model)
    full_kv = runtime.new_kv(64)
    full = runtime.prefill(PROMPT, full_kv, 0)

    cut = 32
    donor = runtime.new_kv(48)
    runtime.prefill(PROMPT[:cut], donor, 0)
    restored = runtime.new_kv(64)
    restored[:, :, :, :cut] = donor[:, :, :, :cut]
    extended = runtime.prefill(PROMPT[cut:], restored, cut)
    torch.testing.assert_close(extended, full, rtol=0, atol=1e-5)
    assert int(extended.argmax()) == int(full.argmax())


def test_greedy_matches_hf_generate(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    assert runtime.greedy(PROMPT, 20) == hf_greedy(tiny_model.model, PROMPT, 20)


def test_greedy_stops_on_stop_token_and_respects_start(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    free = runtime.greedy(PROMPT, 10)
    stopped = runtime.greedy(PROMPT, 10, stop_ids=[free[3]])
    assert stopped == free[: free.index(free[3]) + 1]
    assert runtime.greedy(PROMPT, 0) == []


@pytest.mark.parametrize(
    ("model_type", "overrides"),
    [
        ("llama", {"attention_bias": True, "mlp_bias": True}),
        ("llama", {"tie_word_embeddings": False}),
        ("llama", {"num_key_value_heads": 4}),
        ("llama", {"num_key_value_heads": 1}),
        (
            "llama",
            {
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 16,
                }
            },
        ),
        ("llama", {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}}),
        ("mistral", {"sliding_window": None}),
        ("qwen2", {}),
    ],
    ids=["bias", "untied", "mha", "mqa", "rope-llama3", "rope-linear", "mistral", "qwen2"],
)
def test_variants_match_hf(
    tiny_model_factory: Callable[..., LoadedModel], model_type: str, overrides: dict[str, object]
) -> None:
    loaded = tiny_model_factory(model_type, **overrides)
    runtime = LlamaRuntime(loaded.model)
    kv = runtime.new_kv(64)
    runtime.prefill(PROMPT[:20], kv, 0)
    got = runtime.forward(PROMPT[20:], kv, 20, all_logits=True)
    assert_close_logits(got, hf_logits(loaded.model, PROMPT)[20:])


def test_fusing_keeps_hf_model_working_without_copies(tiny_model: LoadedModel) -> None:
    before = hf_logits(tiny_model.model, PROMPT)
    LlamaRuntime(tiny_model.model)
    LlamaRuntime(tiny_model.model)  # a second runtime over the same model re-fuses cleanly
    torch.testing.assert_close(hf_logits(tiny_model.model, PROMPT), before, rtol=0, atol=1e-6)
    attn = tiny_model.model.model.layers[0].self_attn
    q, k = attn.q_proj.weight, attn.k_proj.weight
    assert k.data_ptr() == q.data_ptr() + q.numel() * q.element_size()


def test_properties_and_kv_shape(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    assert (runtime.num_layers, runtime.num_kv_heads, runtime.head_dim) == (2, 2, 16)
    assert runtime.dtype == torch.float32
    assert runtime.vocab_size == len(tiny_model.tokenizer)
    assert runtime.new_kv(10).shape == (2, 2, 2, 10, 16)
    assert runtime.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 4
    assert runtime.max_positions == 1024


def test_rejects_unsupported_models(tiny_model_factory: Callable[..., LoadedModel]) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="'gpt2'"):
        LlamaRuntime(gpt2)
    dynamic = tiny_model_factory(
        rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}
    )
    with pytest.raises(ValueError, match="'dynamic'"):
        LlamaRuntime(dynamic.model)


def test_rejects_bad_buffers_and_positions(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    with pytest.raises(ValueError, match="capacity"):
        runtime.forward(PROMPT, runtime.new_kv(8), 0)
    with pytest.raises(ValueError, match="shape"):
        runtime.forward(PROMPT, torch.zeros(2, 2, 3, 64, 16), 0)
    with pytest.raises(ValueError, match="dtype"):
        runtime.forward(PROMPT, runtime.new_kv(64).double(), 0)
    with pytest.raises(ValueError, match="positive"):
        runtime.new_kv(0)
    with pytest.raises(ValueError, match="chunk_size"):
        runtime.prefill(PROMPT, runtime.new_kv(64), 0, chunk_size=0)
    with pytest.raises(ValueError, match="sliding window"):
        mistral = LlamaRuntime(_mistral_with_window())
        mistral.forward(PROMPT, mistral.new_kv(64), 0)


def _mistral_with_window() -> PreTrainedModel:
    from tests.tiny_models import build_tiny_model

    return build_tiny_model("mistral", sliding_window=16).model


def test_accepts_tensor_ids(tiny_model: LoadedModel) -> None:
    runtime = LlamaRuntime(tiny_model.model)
    from_list = runtime.forward(PROMPT, runtime.new_kv(64), 0)
    from_2d = runtime.forward(torch.tensor([PROMPT]), runtime.new_kv(64), 0)
    torch.testing.assert_close(from_2d, from_list, rtol=0, atol=0)


# --- the embedded SmolLM2 (marked `model` by conftest) -------------------------------------


def _chat_ids(loaded: LoadedModel, text: str) -> list[int]:
    tokenizer: Any = loaded.tokenizer  # apply_chat_template returns a wide union
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=False
    )
    return [int(i) for i in ids]


def test_embedded_logits_match_hf(embedded_model: LoadedModel) -> None:
    ids = _chat_ids(embedded_model, "Name three colours of the rainbow.")
    runtime = LlamaRuntime(embedded_model.model)
    got = runtime.forward(ids, runtime.new_kv(len(ids)), 0, all_logits=True)
    assert_close_logits(got, hf_logits(embedded_model.model, ids))


def test_embedded_greedy_matches_hf_generate(embedded_model: LoadedModel) -> None:
    ids = _chat_ids(embedded_model, "Write one sentence about the sea.")
    runtime = LlamaRuntime(embedded_model.model)
    assert runtime.greedy(ids, 20) == hf_greedy(embedded_model.model, ids, 20)


def test_embedded_chunking_does_not_change_the_next_token(embedded_model: LoadedModel) -> None:
    ids = _chat_ids(embedded_model, "Explain what a prefix cache is, briefly. " * 6)
    runtime = LlamaRuntime(embedded_model.model)
    one_pass = runtime.prefill(ids, runtime.new_kv(len(ids)), 0)
    for chunk in (16, 33):
        chunked = runtime.prefill(ids, runtime.new_kv(len(ids)), 0, chunk_size=chunk)
        assert int(chunked.argmax()) == int(one_pass.argmax())
        assert_close_logits(chunked, one_pass)


def test_decode_threads_apply_to_short_forwards_and_are_restored(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="decode_threads"):
        LlamaRuntime(tiny_model.model, decode_threads=0)
    runtime = LlamaRuntime(tiny_model.model, decode_threads=1)
    kv = runtime.new_kv(64)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runtime.prefill(PROMPT, kv, 0)
        step = runtime.step(5, kv, len(PROMPT))
        assert torch.get_num_threads() == 2, "the caller's thread count is restored"
    finally:
        torch.set_num_threads(previous)
    reference = LlamaRuntime(tiny_model.model, decode_threads=2)
    other = reference.new_kv(64)
    reference.prefill(PROMPT, other, 0)
    torch.testing.assert_close(reference.step(5, other, len(PROMPT)), step)


def test_by_default_decode_steps_try_both_thread_counts_and_restore_the_callers(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runtime = LlamaRuntime(tiny_model.model)
        seen: list[int] = []
        real_decode = runtime._decode_rows

        def spy(*args: Any) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return real_decode(*args)

        monkeypatch.setattr(runtime, "_decode_rows", spy)
        kv = runtime.new_kv(64)
        runtime.prefill(PROMPT, kv, 0)
        for offset in range(12):
            runtime.step(5 + offset, kv, len(PROMPT) + offset)
            assert torch.get_num_threads() == 2, "the caller's thread count is restored"
        assert set(seen) == {1, 2}, "decode steps measured both counts"
        assert runtime.short_forward_threads in (1, 2)
    finally:
        torch.set_num_threads(previous)


def test_half_precision_decode_weights_touch_only_decode_steps(tiny_model: LoadedModel) -> None:
    exact = LlamaRuntime(tiny_model.model)
    fast = LlamaRuntime(tiny_model.model, decode_precision="float16")
    assert fast.decode_precision == "float16" and fast.prefill_precision == "float32"
    kv_exact, kv_fast = exact.new_kv(64), fast.new_kv(64)
    # Prefill keeps the exact weights: identical logits and KV.
    torch.testing.assert_close(
        fast.prefill(PROMPT, kv_fast, 0), exact.prefill(PROMPT, kv_exact, 0), rtol=0, atol=0
    )
    torch.testing.assert_close(kv_fast, kv_exact, rtol=0, atol=0)
    # A one-token prompt forward is prompt work: exact weights, whatever its length.
    torch.testing.assert_close(
        fast.forward([5], kv_fast.clone(), len(PROMPT)),
        exact.forward([5], kv_exact.clone(), len(PROMPT)),
        rtol=0,
        atol=0,
    )
    step_fast = fast.step(5, kv_fast, len(PROMPT))
    step_exact = exact.step(5, kv_exact, len(PROMPT))
    assert step_fast.dtype == torch.float32 and kv_fast.dtype == torch.float32
    scale = float(step_exact.abs().max())
    torch.testing.assert_close(step_fast, step_exact, rtol=0, atol=1e-2 * scale)
    assert int(step_fast.argmax()) == int(step_exact.argmax())


@pytest.mark.parametrize("half", [False, True])
def test_decode_batch_rows_match_steps_run_alone(tiny_model: LoadedModel, half: bool) -> None:
    runtime = LlamaRuntime(tiny_model.model, decode_precision="float16" if half else "float32")
    prompts = [PROMPT[:10], PROMPT[:25], PROMPT[5:12]]
    tokens = [7, 100, 42]
    alone, batched = [], []
    for prompt in prompts:
        kv = runtime.new_kv(64)
        runtime.prefill(prompt, kv, 0)
        alone.append(kv)
        batched.append(kv.clone())
    want = torch.stack(
        [runtime.step(t, kv, len(p)) for t, kv, p in zip(tokens, alone, prompts, strict=True)]
    )
    got = runtime.decode_batch(
        [(t, kv, len(p)) for t, kv, p in zip(tokens, batched, prompts, strict=True)]
    )
    assert got.shape == (3, runtime.vocab_size)
    assert_close_logits(got, want)
    for kv_alone, kv_batched, prompt in zip(alone, batched, prompts, strict=True):
        written = len(prompt) + 1
        torch.testing.assert_close(kv_batched[..., :written, :], kv_alone[..., :written, :])
    one = runtime.decode_batch([(tokens[0], batched[0], len(prompts[0]) + 1)])
    assert one.shape == (1, runtime.vocab_size)
