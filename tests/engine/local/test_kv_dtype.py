"""``--kv-dtype``: the KV the prefix cache stores and the engine attends over.

Tiny-model tests for the rounding (KV is rounded when written, so a miss sees
what a hit reads), the byte accounting (budget and stats in the dtype's
bytes), validation and the CLI option; with the embedded SmolLM2, the
faithfulness cases of ``test_faithfulness.py`` on 16-bit KV. The CLI option:
``tests/cli/test_serve_kv_dtype.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from promptcache.cli._serve_setup import KV_DTYPE_NAMES
from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.model.runtime import KV_DTYPES as RUNTIME_KV_DTYPES
from promptcache.model.runtime import LlamaRuntime
from promptcache.prefix.cache import PrefixCache, PrefixCacheConfig
from promptcache.prefix.pool import KV_DTYPES, KVLayout
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock
from promptcache.result import Result
from tests.engine.local import test_faithfulness as faithfulness

FAITHFUL_HALF_DTYPES = ("float16",)
"""16-bit dtypes the faithfulness cases hold for (bfloat16 fails one: see kv_dtype.py)."""
SHARED = " ".join(f"fact {i} is about topic {i % 7}." for i in range(12))


def tiny_engine(loaded: Any, kv_dtype: str, *, enabled: bool = True) -> LocalEngine:
    cache = PrefixCacheConfig(
        block_size=4,
        min_cache_tokens=16,
        kv_cache_bytes=8 << 20,
        kv_dtype=kv_dtype,
        enabled=enabled,
    )
    return LocalEngine(LocalEngineConfig(prefix_cache=cache), loaded=loaded)


def ask(question: str, max_tokens: int = 12) -> ChatRequest:
    return ChatRequest(
        model="tiny",
        system=(TextBlock(text=SHARED),),
        messages=(Message(role="user", content=(TextBlock(text=question),)),),
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


def complete(engine: LocalEngine, request: ChatRequest) -> Result:
    results = [event for event in engine.generate(request) if isinstance(event, Result)]
    assert len(results) == 1
    return results[0]


def test_the_names_agree_everywhere() -> None:
    assert tuple(KV_DTYPES) == KV_DTYPE_NAMES
    assert tuple(KV_DTYPES.values()) == RUNTIME_KV_DTYPES
    assert PrefixCacheConfig().kv_dtype == "float32"


@pytest.mark.parametrize("bad", ["int8", "fp16", "float64", ""])
def test_an_unknown_kv_dtype_is_refused_with_the_valid_names(bad: str) -> None:
    with pytest.raises(ValueError, match=r"kv_dtype.*float32, float16, bfloat16"):
        PrefixCacheConfig(kv_dtype=bad)


def test_a_layout_refuses_a_dtype_the_engine_cannot_attend_over() -> None:
    with pytest.raises(ValueError, match=r"KVLayout\.dtype"):
        KVLayout(num_layers=1, num_kv_heads=1, head_dim=4, dtype=torch.float64)


@pytest.mark.parametrize("kv_dtype", list(KV_DTYPES))
def test_kv_is_rounded_when_written(tiny_model: Any, kv_dtype: str) -> None:
    """Layer 0's keys and values depend on the embeddings alone: in a 16-bit
    buffer they are the float32 run's, rounded to nearest -- not a different
    computation, and not left unrounded for the miss path to attend over."""
    dtype = KV_DTYPES[kv_dtype]
    runtime = LlamaRuntime(tiny_model.weights)
    ids = list(range(40, 80))
    exact = runtime.new_kv(len(ids))
    runtime.prefill(ids, exact, 0)
    rounded = runtime.new_kv(len(ids), dtype)
    logits = runtime.prefill(ids, rounded, 0)
    assert rounded.dtype == dtype
    assert torch.equal(rounded[0], exact[0].to(dtype))
    assert logits.dtype == torch.float32
    if dtype != torch.float32:  # the later layers attend over rounded KV: close, not equal
        assert not torch.equal(rounded[1].float(), exact[1])
        torch.testing.assert_close(rounded[1].float(), exact[1], rtol=2e-2, atol=6e-2)


@pytest.mark.parametrize("kv_dtype", list(KV_DTYPES))
def test_a_restored_prefix_continues_as_a_full_forward(tiny_model: Any, kv_dtype: str) -> None:
    dtype = KV_DTYPES[kv_dtype]
    runtime = LlamaRuntime(tiny_model.weights)
    layout = KVLayout(
        num_layers=runtime.num_layers,
        num_kv_heads=runtime.num_kv_heads,
        head_dim=runtime.head_dim,
        dtype=dtype,
    )
    config = PrefixCacheConfig(block_size=4, min_cache_tokens=8, kv_dtype=kv_dtype)
    cache = PrefixCache(config, layout, model_id="tiny")
    generator = torch.Generator().manual_seed(3)
    first = torch.randint(0, 200, (42,), generator=generator).tolist()
    second = [*first[:30], *torch.randint(0, 200, (11,), generator=generator).tolist()]
    kv_first = runtime.new_kv(len(first), dtype)
    runtime.prefill(first, kv_first, 0)
    match = cache.match(first, salt="")
    cache.commit(match, first, kv_first)
    cache.release(match)

    match = cache.match(second, salt="")
    try:
        assert match.num_tokens == 28
        kv = runtime.new_kv(len(second), dtype)
        cache.gather(match, kv)
        logits = runtime.prefill(second[28:], kv, 28)
    finally:
        cache.release(match)
    kv_full = runtime.new_kv(len(second), dtype)
    logits_full = runtime.prefill(second, kv_full, 0)
    assert torch.equal(kv[:, :, :, :28], kv_first[:, :, :, :28])  # stored as written
    torch.testing.assert_close(logits, logits_full, rtol=1e-4, atol=1e-4)
    assert int(logits.argmax()) == int(logits_full.argmax())


@pytest.mark.parametrize("kv_dtype", list(KV_DTYPES))
def test_budget_and_stats_count_the_dtypes_bytes(tiny_model: Any, kv_dtype: str) -> None:
    engine = tiny_engine(tiny_model, kv_dtype)
    layout = engine.prefix_cache.layout
    assert layout.dtype == KV_DTYPES[kv_dtype]
    bytes_per_token = layout.num_layers * 2 * layout.num_kv_heads * layout.head_dim
    bytes_per_token *= KV_DTYPES[kv_dtype].itemsize
    assert layout.bytes_per_token == bytes_per_token
    complete(engine, ask("Which topic is fact 3 about?", max_tokens=2))
    stats = engine.prefix_stats()
    block_bytes = 4 * bytes_per_token
    assert stats.blocks_used > 0
    assert stats.kv_bytes_used == stats.blocks_used * block_bytes
    assert stats.kv_bytes_budget == ((8 << 20) // block_bytes) * block_bytes


def test_a_16_bit_kv_holds_twice_the_blocks_of_float32(tiny_model: Any) -> None:
    def budget_blocks(kv_dtype: str) -> int:
        engine = tiny_engine(tiny_model, kv_dtype)
        return engine.prefix_stats().kv_bytes_budget // engine.prefix_cache.block_bytes

    assert budget_blocks("bfloat16") == budget_blocks("float16") == 2 * budget_blocks("float32")


@pytest.mark.parametrize("kv_dtype", list(KV_DTYPES))
def test_a_hit_decodes_exactly_as_a_miss_on_the_same_dtype(tiny_model: Any, kv_dtype: str) -> None:
    cached = tiny_engine(tiny_model, kv_dtype)
    uncached = tiny_engine(tiny_model, kv_dtype, enabled=False)
    complete(cached, ask("Warm the cache.", max_tokens=1))
    for question in ("Which topic is fact 5 about?", "Name two facts about topic 2."):
        hit = complete(cached, ask(question))
        miss = complete(uncached, ask(question))
        assert hit.usage.cache_read_input_tokens > 0
        assert miss.usage.cache_read_input_tokens == 0
        assert hit.choices[0].text == miss.choices[0].text
        assert hit.usage.output_tokens == miss.usage.output_tokens


FAITHFULNESS_CASES: list[Callable[[LocalEngine, LocalEngine], None]] = [
    faithfulness.test_shared_system_prompt,
    faithfulness.test_multi_turn_conversation,
    faithfulness.test_breakpoint_mid_conversation,
]


@pytest.fixture(scope="module", params=FAITHFUL_HALF_DTYPES)
def half_engines(request: pytest.FixtureRequest, embedded_model: Any) -> tuple[LocalEngine, ...]:
    """A cached and an uncached engine on the embedded model, both with 16-bit KV."""
    kv_dtype = request.param
    cached = PrefixCacheConfig(block_size=16, min_cache_tokens=32, kv_dtype=kv_dtype)
    off = PrefixCacheConfig(enabled=False, kv_dtype=kv_dtype)
    return (
        LocalEngine(LocalEngineConfig(prefix_cache=cached), loaded=embedded_model),
        LocalEngine(LocalEngineConfig(prefix_cache=off), loaded=embedded_model),
    )


@pytest.mark.parametrize("case", FAITHFULNESS_CASES, ids=lambda case: case.__name__[5:])
def test_faithful_with_16_bit_kv(
    half_engines: tuple[LocalEngine, LocalEngine],
    case: Callable[[LocalEngine, LocalEngine], None],
) -> None:
    """Each faithfulness case (a hit's greedy text equals the uncached engine's) on 16-bit KV."""
    cached, uncached = half_engines
    case(cached, uncached)
