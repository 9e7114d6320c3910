"""The local engine on a tiny random model: cache hits in Usage, validation, decoding, refs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.local import generation as local
from promptcache.engine.local.executor import ModelExecutor
from promptcache.errors import RequestError
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import CacheControl, ChatRequest, Message, SamplingParams, TextBlock
from promptcache.result import PromptUsage, Result, StreamEvent, TextDelta, Usage

BLOCK = 4
SMALL_CACHE = PrefixCacheConfig(block_size=BLOCK, min_cache_tokens=16, kv_cache_bytes=8 << 20)
SHARED = " ".join(f"fact {i} is about topic {i % 7}." for i in range(12))


@pytest.fixture
def engine(tiny_model: Any) -> LocalEngine:
    return LocalEngine(LocalEngineConfig(prefix_cache=SMALL_CACHE), loaded=tiny_model)


def ask(
    question: str,
    *,
    system: str = SHARED,
    cache: CacheControl | None = None,
    tenant: str = "",
    **sampling: Any,
) -> ChatRequest:
    params = {"max_tokens": 8, **sampling}
    return ChatRequest(
        model="tiny",
        system=(TextBlock(text=system, cache_control=cache),),
        messages=(Message(role="user", content=(TextBlock(text=question),)),),
        sampling=SamplingParams(**params),
        tenant=tenant,
    )


def run(engine: LocalEngine, request: ChatRequest) -> tuple[list[StreamEvent], Result]:
    events = list(engine.generate(request))
    result = events[-1]
    assert isinstance(result, Result)
    return events, result


def usage_of(engine: LocalEngine, request: ChatRequest) -> Usage:
    return run(engine, request)[1].usage


def assert_no_refs(engine: LocalEngine) -> None:
    assert engine.prefix_cache.blocks_in_use == 0
    assert engine.prefix_cache.claims_in_flight == 0


def test_second_request_reads_the_shared_prefix(engine: LocalEngine) -> None:
    first = usage_of(engine, ask("What is fact 3?"))
    second = usage_of(engine, ask("What is fact 11?"))
    assert first.cache_read_input_tokens == 0
    assert first.input_tokens == first.prompt_tokens
    assert second.cache_read_input_tokens > len(SHARED) // 8
    assert second.cache_read_input_tokens % BLOCK == 0
    assert second.input_tokens == second.prompt_tokens - second.cache_read_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert_no_refs(engine)


def test_explicit_breakpoint_is_written_then_read(engine: LocalEngine) -> None:
    hour = CacheControl(ttl="1h")
    prompt = engine.renderer.render(ask("Q1", cache=hour))
    ((position, _),) = prompt.breakpoint_positions
    aligned = position // BLOCK * BLOCK

    first = usage_of(engine, ask("Q1", cache=hour))
    assert first.cache_creation_1h_input_tokens == aligned
    assert first.cache_creation_5m_input_tokens == 0
    assert first.input_tokens == first.prompt_tokens - aligned

    second = usage_of(engine, ask("A different question", cache=hour))
    assert second.cache_read_input_tokens >= aligned
    assert second.cache_creation_input_tokens == 0
    assert engine.prefix_stats().blocks_pinned == aligned // BLOCK


def test_prompt_usage_comes_first_and_matches_the_result(engine: LocalEngine) -> None:
    events, result = run(engine, ask("hello"))
    assert isinstance(events[0], PromptUsage)
    assert events[0].usage.output_tokens == 0
    assert events[0].usage.prompt_tokens == result.usage.prompt_tokens
    assert all(isinstance(e, TextDelta) for e in events[1:-1])
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == result.choices[0].text
    assert result.model == engine.served_name


def test_full_prompt_hit_recomputes_only_the_last_token(tiny_model: Any) -> None:
    # block size 1: a repeated prompt is cached to its very last token
    engine = LocalEngine(
        LocalEngineConfig(prefix_cache=PrefixCacheConfig(block_size=1, min_cache_tokens=4)),
        loaded=tiny_model,
    )
    request = ask("repeat me", max_tokens=6)
    first_events, first = run(engine, request)
    _, second = run(engine, request)
    assert second.usage.cache_read_input_tokens == second.usage.prompt_tokens
    assert second.usage.input_tokens == 0
    assert second.choices[0].text == first.choices[0].text
    assert second.usage.output_tokens == first.usage.output_tokens
    assert first_events


def test_greedy_output_is_the_same_with_and_without_the_cache(tiny_model: Any) -> None:
    cached = LocalEngine(LocalEngineConfig(prefix_cache=SMALL_CACHE), loaded=tiny_model)
    uncached = LocalEngine(
        LocalEngineConfig(prefix_cache=PrefixCacheConfig(enabled=False)), loaded=tiny_model
    )
    run(cached, ask("warm the cache", max_tokens=4))
    for question in ("first question", "second question, longer than the first"):
        hit = run(cached, ask(question, max_tokens=12))[1]
        miss = run(uncached, ask(question, max_tokens=12))[1]
        assert hit.usage.cache_read_input_tokens > 0
        assert miss.usage.cache_read_input_tokens == 0
        assert hit.choices[0].text == miss.choices[0].text
        assert hit.usage.output_tokens == miss.usage.output_tokens


def test_other_tenant_gets_no_hit(engine: LocalEngine) -> None:
    usage_of(engine, ask("same", tenant="alice"))
    assert usage_of(engine, ask("same", tenant="alice")).cache_read_input_tokens > 0
    assert usage_of(engine, ask("same", tenant="bob")).cache_read_input_tokens == 0


def test_short_prompts_are_not_cached(tiny_model: Any) -> None:
    engine = LocalEngine(
        LocalEngineConfig(
            prefix_cache=PrefixCacheConfig(block_size=BLOCK, min_cache_tokens=100_000)
        ),
        loaded=tiny_model,
    )
    usage_of(engine, ask("q"))
    again = usage_of(engine, ask("q"))
    assert again.cache_read_input_tokens == 0
    assert engine.prefix_stats().blocks_used == 0


def test_max_tokens_ends_with_length(engine: LocalEngine) -> None:
    result = run(engine, ask("go on", max_tokens=5))[1]
    choice = result.choices[0]
    assert result.usage.output_tokens <= 5
    if choice.finish_reason == "length":
        assert result.usage.output_tokens == 5
    else:  # the random model may emit EOS early
        assert choice.finish_reason == "stop"


def test_stop_string_cuts_the_text(engine: LocalEngine) -> None:
    free = run(engine, ask("stop test", max_tokens=24))[1].choices[0].text
    if len(free) < 6:
        pytest.skip("the random model produced too little text to place a stop string")
    stop = free[3:5]
    stopped = run(engine, ask("stop test", max_tokens=24, stop=(stop,)))[1].choices[0]
    assert stopped.text == free[: free.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.stop_sequence == stop


def test_seeded_sampling_is_reproducible(engine: LocalEngine) -> None:
    def sample(seed: int) -> str:
        request = ask("sample", max_tokens=12, temperature=1.0, seed=seed)
        return run(engine, request)[1].choices[0].text

    assert sample(5) == sample(5)
    assert sample(6) != sample(5)


def test_n_choices(engine: LocalEngine) -> None:
    events, result = run(engine, ask("n", max_tokens=6, temperature=1.0, seed=1, n=3))
    assert [c.index for c in result.choices] == [0, 1, 2]
    for choice in result.choices:
        deltas = [
            e.text for e in events if isinstance(e, TextDelta) and e.choice_index == choice.index
        ]
        assert "".join(deltas) == choice.text
    assert result.usage.output_tokens <= 18


def test_concurrent_requests_decode_together_and_say_the_same(tiny_model: Any) -> None:
    # A long gather window: while several requests decode, every batch holds them all.
    engine = LocalEngine(
        LocalEngineConfig(prefix_cache=SMALL_CACHE),
        loaded=tiny_model,
        executor=ModelExecutor(gather_window=5.0),
    )
    questions = [f"question number {i}" for i in range(4)]
    results = [run(engine, ask(q, max_tokens=40))[1] for q in questions]
    alone = {q: r.choices[0].text for q, r in zip(questions, results, strict=True)}
    steps = sum(r.usage.output_tokens - 1 for r in results)  # every token after the first
    before = engine.batching_stats()
    together: dict[str, str] = {}
    start = threading.Barrier(len(questions))

    def ask_now(question: str) -> None:
        start.wait(timeout=10)
        together[question] = run(engine, ask(question, max_tokens=40))[1].choices[0].text

    threads = [threading.Thread(target=ask_now, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together == alone
    after = engine.batching_stats()
    assert after.largest_batch > 1
    assert after.steps - before.steps == steps
    assert after.batches - before.batches < after.steps - before.steps
    assert_no_refs(engine)


def five_breakpoints() -> ChatRequest:
    # Refused as it is built (ChatRequest validates its breakpoints once, up front).
    return ChatRequest(
        model="tiny",
        messages=(
            Message(
                role="user",
                content=tuple(
                    TextBlock(text=f"b{i}", cache_control=CacheControl()) for i in range(5)
                ),
            ),
        ),
    )


@pytest.mark.parametrize(
    "make_request",
    [five_breakpoints, lambda: ask("x", temperature=3.0), lambda: ask("x", max_tokens=0)],
    ids=["five-breakpoints", "temperature", "max_tokens"],
)
def test_invalid_requests_raise_before_anything_is_yielded(
    engine: LocalEngine, make_request: Callable[[], ChatRequest]
) -> None:
    with pytest.raises(RequestError):
        stream = engine.generate(make_request())
        next(stream)
    assert_no_refs(engine)


def test_prompt_longer_than_the_context_is_rejected(tiny_model: Any) -> None:
    engine = LocalEngine(
        LocalEngineConfig(prefix_cache=SMALL_CACHE, max_context_tokens=64), loaded=tiny_model
    )
    with pytest.raises(RequestError, match="maximum context length") as info:
        next(engine.generate(ask("q")))
    assert info.value.param == "messages"
    short = ChatRequest(
        model="tiny",
        system=(TextBlock(text="hi"),),
        messages=(Message(role="user", content=(TextBlock(text="q"),)),),
        sampling=SamplingParams(max_tokens=60),
    )
    with pytest.raises(RequestError, match="max_tokens") as info:
        next(engine.generate(short))
    assert info.value.param == "max_tokens"


def test_cancel_midway_releases_every_ref(engine: LocalEngine) -> None:
    usage_of(engine, ask("warm"))  # so the cancelled request holds cached blocks
    cancel = threading.Event()
    stream: Iterator[StreamEvent] = engine.generate(ask("cancel me", max_tokens=50), cancel=cancel)
    seen: list[StreamEvent] = [next(stream)]
    assert isinstance(seen[0], PromptUsage)
    assert engine.prefix_cache.blocks_in_use > 0  # the request holds its prefix
    cancel.set()
    seen.extend(stream)
    assert not any(isinstance(e, Result) for e in seen)
    assert_no_refs(engine)


def test_closing_the_stream_releases_every_ref(engine: LocalEngine) -> None:
    usage_of(engine, ask("warm"))
    stream = engine.generate(ask("close me", max_tokens=50))
    next(stream)
    assert engine.prefix_cache.blocks_in_use > 0
    stream.close()  # type: ignore[attr-defined]
    assert_no_refs(engine)


def test_cancel_before_start_yields_nothing(engine: LocalEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    assert list(engine.generate(ask("never"), cancel=cancel)) == []
    assert_no_refs(engine)


def test_refs_back_to_zero_after_many_requests(engine: LocalEngine) -> None:
    for i in range(12):
        usage_of(engine, ask(f"question {i % 4}", tenant=f"t{i % 2}", max_tokens=2))
    assert_no_refs(engine)
    stats = engine.prefix_stats()
    assert stats.tokens_hit > 0
    engine.clear_prefix_cache()
    assert engine.prefix_stats().blocks_used == 0


def test_concurrent_identical_prefixes_are_computed_once(engine: LocalEngine) -> None:
    results: list[Usage] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results.append(usage_of(engine, ask(f"concurrent {i}", max_tokens=3)))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert len(results) == 3
    misses = [u for u in results if u.cache_read_input_tokens == 0]
    assert len(misses) == 1
    assert_no_refs(engine)


def test_models_and_config(tiny_model: Any) -> None:
    engine = LocalEngine(
        LocalEngineConfig(prefix_cache=SMALL_CACHE, served_name="my-model"), loaded=tiny_model
    )
    (info,) = engine.models()
    assert info.id == "my-model"
    with pytest.raises(ValueError):
        LocalEngineConfig(max_context_tokens=1)
    with pytest.raises(ValueError):
        LocalEngineConfig(served_name=" ")


def test_kv_buffer_growth_does_not_change_output(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ask("grow", max_tokens=20)
    roomy = run(engine, request)[1]
    monkeypatch.setattr(local, "INITIAL_DECODE_ROOM", 1)
    tight = run(engine, request)[1]
    assert tight.choices[0].text == roomy.choices[0].text
    assert tight.usage.output_tokens == roomy.usage.output_tokens


def test_a_stream_closed_after_prefill_still_stores_its_prefix(engine: LocalEngine) -> None:
    stream = engine.generate(ask("closed early", max_tokens=30))
    assert isinstance(next(stream), PromptUsage)
    stream.close()  # type: ignore[attr-defined]
    assert_no_refs(engine)
    assert usage_of(engine, ask("another question")).cache_read_input_tokens > 0


def test_decode_precision_is_validated_and_named_in_the_error() -> None:
    from promptcache.engine.local import LocalEngineConfig

    assert LocalEngineConfig().decode_precision == "auto"
    with pytest.raises(ValueError, match="decode_precision"):
        LocalEngineConfig(decode_precision="int3")
