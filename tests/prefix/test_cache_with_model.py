"""The cache with a real (tiny, random) Llama: restored KV + the suffix == a full forward."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from promptcache.model.runtime import LlamaRuntime
from promptcache.prefix import KVLayout, PrefixCache, PrefixCacheConfig


@pytest.fixture(scope="module")
def runtime() -> LlamaRuntime:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaRuntime(LlamaForCausalLM(config))


def _cache(runtime: LlamaRuntime) -> PrefixCache:
    layout = KVLayout(
        num_layers=runtime.num_layers,
        num_kv_heads=runtime.num_kv_heads,
        head_dim=runtime.head_dim,
        dtype=runtime.dtype,
    )
    config = PrefixCacheConfig(block_size=4, min_cache_tokens=8, kv_cache_bytes=1 << 20)
    return PrefixCache(config, layout, model_id="tiny-llama")


def test_restored_prefix_gives_the_same_logits_and_kv_as_a_full_forward(
    runtime: LlamaRuntime,
) -> None:
    cache = _cache(runtime)
    generator = torch.Generator().manual_seed(1)
    first = torch.randint(0, 96, (42,), generator=generator).tolist()
    second = [*first[:30], *torch.randint(0, 96, (11,), generator=generator).tolist()]

    kv_first = runtime.new_kv(len(first))
    runtime.prefill(first, kv_first, 0)
    match = cache.match(first, salt="")
    cache.commit(match, first, kv_first)
    cache.release(match)

    match = cache.match(second, salt="")
    try:
        assert match.num_tokens == 28
        kv = runtime.new_kv(len(second) + 4)
        cache.gather(match, kv)
        logits = runtime.prefill(second[match.num_tokens :], kv, match.num_tokens)
    finally:
        cache.release(match)

    kv_full = runtime.new_kv(len(second) + 4)
    logits_full = runtime.prefill(second, kv_full, 0)
    torch.testing.assert_close(logits, logits_full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(kv, kv_full, rtol=1e-4, atol=1e-5)
    # The cached part is copied bit for bit.
    assert torch.equal(kv[:, :, :, :28, :], kv_first[:, :, :, :28, :])


def test_greedy_continuation_is_identical_with_and_without_a_hit(runtime: LlamaRuntime) -> None:
    cache = _cache(runtime)
    generator = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, 96, (37,), generator=generator).tolist()
    reference = runtime.greedy(prompt, 12)

    kv = runtime.new_kv(len(prompt))
    runtime.prefill(prompt, kv, 0)
    match = cache.match(prompt, salt="tenant")
    cache.commit(match, prompt, kv)
    cache.release(match)

    other_tenant = cache.match(prompt, salt="other")
    cache.release(other_tenant)
    assert other_tenant.num_tokens == 0
    match = cache.match(prompt, salt="tenant")
    try:
        assert match.num_tokens == 36
        restored = runtime.new_kv(len(prompt) + 12)
        cache.gather(match, restored)
        continued = runtime.greedy(
            prompt[match.num_tokens :], 12, kv=restored, start=match.num_tokens
        )
    finally:
        cache.release(match)
    assert continued == reference
