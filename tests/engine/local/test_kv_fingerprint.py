"""The local engine's part of the KV disk tier's fingerprint: what changes the stored KV
or the token ids a prompt renders to changes the fingerprint, and nothing else does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.local.kv_fingerprint import model_fingerprint
from promptcache.model.loading import LoadedModel
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock
from promptcache.result import Result


def test_the_fingerprint_follows_template_rope_and_prefill_precision(
    tiny_model: LoadedModel, tiny_model_factory: Callable[..., LoadedModel]
) -> None:
    base = model_fingerprint(tiny_model, prefill_precision="float32")
    assert base == model_fingerprint(tiny_model_factory(), prefill_precision="float32")
    assert base != model_fingerprint(tiny_model, prefill_precision="bfloat16")
    scaled = tiny_model_factory(rope_theta=5e5)
    assert model_fingerprint(scaled, prefill_precision="float32")["rope"] != base["rope"]
    tokenizer: Any = tiny_model.tokenizer
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = original + "{{ '' }}"
        changed = model_fingerprint(tiny_model, prefill_precision="float32")
    finally:
        tokenizer.chat_template = original
    assert changed["chat_template"] != base["chat_template"]
    assert {k for k in base if base[k] != changed[k]} == {"chat_template"}


def test_a_tiny_engine_restarts_on_its_disk_tier(tiny_model: LoadedModel, tmp_path: Path) -> None:
    prefix = PrefixCacheConfig(block_size=4, min_cache_tokens=8, disk_path=str(tmp_path))
    config = LocalEngineConfig(prefix_cache=prefix, max_context_tokens=512)
    chat = ChatRequest(
        model="tiny",
        messages=(Message(role="user", content=(TextBlock(text="a fairly long question " * 4),)),),
        sampling=SamplingParams(max_tokens=6, temperature=0.0),
    )

    def run(engine: LocalEngine) -> Result:
        events = list(engine.generate(chat))
        result = events[-1]
        assert isinstance(result, Result)
        return result

    first = LocalEngine(config, loaded=tiny_model)
    reference = run(first)
    first.close()
    second = LocalEngine(config, loaded=tiny_model)
    try:
        again = run(second)
        assert again.usage.cache_read_input_tokens > 0
        assert again.choices[0].text == reference.choices[0].text
        disk = second.prefix_stats().tiers[1]
        assert disk.tier == "disk" and disk.hits > 0
    finally:
        second.close()
