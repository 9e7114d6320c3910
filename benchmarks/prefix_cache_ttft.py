"""Time to first token with the prefix KV cache: miss, hit, and the compute limit.

One run on the embedded SmolLM2 with a ~2,000-token shared prefix (system
prompt) and a ~48-token new suffix (user turn). Prints, side by side:

* TTFT on a miss, on a hit, and the limit: a forward of only the uncached
  suffix over a prepared KV cache of the same length (no engine around it);
  the ratios miss/hit (what the cache saves) and hit/limit (engine overhead);
* zero-hit overhead: cache on but every request a miss, against cache off;
* single-stream decode tokens/s; warm-start model load seconds (a fresh
  process, conversion cache already warm);
* KV bytes held when 8 concurrent requests share the prefix, and how many
  copies of the shared prefix that is (target: one).

Each timing is taken ``--repeats`` times, variants interleaved; ratios use the
fastest run of each (like ``timeit``: the run least disturbed by background
load -- on a shared machine a median mostly measures the neighbours), and the
medians are reported next to them. ``--json`` prints one
JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

import machine_limits
from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.local.executor import ModelExecutor
from promptcache.model.loading import load_model
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock
from promptcache.result import PromptUsage, Result, TextDelta

PREFIX_TOKENS = 2000
SHARED_REQUESTS = 8
TARGETS = {
    "miss_over_hit": (">=", 15.0),
    "hit_over_limit": ("<=", 1.25),
    "zero_hit_overhead": ("<=", 1.03),
    "decode_tok_s": (">=", 40.0),
    "warm_load_s": ("<=", 5.0),
    "kv_shared_copies": ("<=", 1.0),
}
# Distinct first words, so two questions share no token after the system prompt.
OPENERS = [
    "Alpha",
    "Bravo",
    "Charlie",
    "Delta",
    "Echo",
    "Foxtrot",
    "Golf",
    "Hotel",
    "India",
    "Juliett",
    "Kilo",
    "Lima",
    "Mike",
    "November",
    "Oscar",
    "Papa",
    "Quebec",
    "Romeo",
    "Sierra",
    "Tango",
    "Uniform",
    "Victor",
    "Whiskey",
    "Xray",
    "Yankee",
    "Zulu",
]
QUESTION = (
    "{opener} asks: looking at all of the rules above, which warehouse ships the orders "
    "placed late in the afternoon, and what happens to an order for an item that is out "
    "of stock? Answer in one short sentence."
)


def shared_system(engine: LocalEngine, nonce: str) -> str:
    """A system prompt whose rendered prefix is about PREFIX_TOKENS tokens."""
    sentences: list[str] = []
    i = 0
    while True:
        sentences.append(
            f"Rule {i}: an order placed before {i % 12 + 1}pm leaves warehouse {i % 9} "
            f"the same day unless item {i * 7 % 100} is out of stock."
        )
        i += 1
        if i % 10 == 0:
            text = f"[{nonce}] " + " ".join(sentences)
            if len(engine.renderer.render(request(text, "x", 1)).token_ids) >= PREFIX_TOKENS:
                return text


def request(system: str, question: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        model="bench",
        system=(TextBlock(text=system),),
        messages=(Message(role="user", content=(TextBlock(text=question),)),),
        sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


def question(i: int) -> str:
    return QUESTION.format(opener=OPENERS[i % len(OPENERS)])


def ttft(engine: LocalEngine, chat: ChatRequest) -> tuple[float, Result]:
    """Seconds until the first token's text is streamed (or the Result, if it has none)."""
    start = time.perf_counter()
    first: float | None = None
    result = None
    for event in engine.generate(chat):
        if first is None and isinstance(event, TextDelta | Result):
            first = time.perf_counter() - start
        if isinstance(event, Result):
            result = event
    assert result is not None and first is not None
    return first, result


def limit_ttft(engine: LocalEngine, chat: ChatRequest, cached_tokens: int) -> float:
    """A bare forward of the uncached suffix over a KV cache already holding the prefix,
    on the engine's model thread (where its own forwards run)."""
    tokens = engine.renderer.render(chat).token_ids
    runtime = engine.runtime

    def bare_forward() -> float:
        kv = runtime.new_kv(len(tokens) + 1)
        runtime.prefill(torch.tensor(tokens[:cached_tokens]), kv, 0)
        suffix = torch.tensor(tokens[cached_tokens:])
        start = time.perf_counter()
        logits = runtime.forward(suffix, kv, cached_tokens)
        int(torch.argmax(logits).item())
        return time.perf_counter() - start

    return engine.executor.call(bare_forward)


def summary(name: str, samples: list[float]) -> dict[str, float]:
    """``name`` = fastest run (used for ratios), ``name_median`` = median run."""
    base = name.removesuffix("_s")
    return {name: min(samples), f"{base}_median_s": statistics.median(samples)}


def measure_ttft(engine: LocalEngine, repeats: int) -> dict[str, Any]:
    shared = shared_system(engine, "shared")
    ttft(engine, request(shared, question(0), 1))  # warm the cache with the prefix
    miss, hit, limit = [], [], []
    prompt_tokens = cached = 0
    for r in range(1, repeats + 1):
        seconds, result = ttft(engine, request(shared_system(engine, f"miss{r}"), question(r), 1))
        assert result.usage.cache_read_input_tokens == 0
        miss.append(seconds)
        chat = request(shared, question(r), 1)
        seconds, result = ttft(engine, chat)
        cached = result.usage.cache_read_input_tokens
        prompt_tokens = result.usage.prompt_tokens
        assert cached > 0
        hit.append(seconds)
        limit.append(limit_ttft(engine, chat, cached))
    return {
        "prompt_tokens": prompt_tokens,
        "cached_tokens": cached,
        "suffix_tokens": prompt_tokens - cached,
        **summary("ttft_miss_s", miss),
        **summary("ttft_hit_s", hit),
        **summary("ttft_limit_s", limit),
    }


def measure_zero_hit_overhead(
    cache_on: LocalEngine, cache_off: LocalEngine, repeats: int
) -> dict[str, float]:
    on: list[float] = []
    off: list[float] = []
    for r in range(repeats):
        # ABBA order: a drift in background load affects both variants alike.
        pairs = [(cache_on, on), (cache_off, off)]
        for engine, samples in pairs if r % 2 == 0 else pairs[::-1]:
            chat = request(shared_system(engine, f"zero{r}-{len(samples)}"), question(r), 1)
            seconds, result = ttft(engine, chat)
            assert result.usage.cache_read_input_tokens == 0
            samples.append(seconds)
    return {**summary("ttft_cache_on_miss_s", on), **summary("ttft_cache_off_s", off)}


def measure_decode(engine: LocalEngine, new_tokens: int) -> float:
    chat = ChatRequest(
        model="bench",
        messages=(
            Message(
                role="user",
                content=(TextBlock(text="Write a long story about a lighthouse keeper."),),
            ),
        ),
        sampling=SamplingParams(max_tokens=new_tokens, temperature=0.0),
    )
    prefilled = 0.0
    for event in engine.generate(chat):
        if isinstance(event, PromptUsage):
            prefilled = time.perf_counter()
        elif isinstance(event, Result):
            return event.usage.output_tokens / (time.perf_counter() - prefilled)
    raise RuntimeError("no Result")


def measure_shared_kv(engine: LocalEngine) -> dict[str, Any]:
    engine.clear_prefix_cache()
    shared = shared_system(engine, "eight")
    first = len(OPENERS) - SHARED_REQUESTS
    chats = [request(shared, question(first + i), 1) for i in range(SHARED_REQUESTS)]
    usages: list[Any] = []
    lock = threading.Lock()

    def worker(chat: ChatRequest) -> None:
        _, result = ttft(engine, chat)
        with lock:
            usages.append(result.usage)

    threads = [threading.Thread(target=worker, args=(chat,)) for chat in chats]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    block = engine.prefix_cache.block_size
    prompts = [engine.renderer.render(chat).token_ids for chat in chats]
    common = _common_prefix(prompts)
    shared_blocks = common // block
    unique_blocks = sum(len(p) // block - shared_blocks for p in prompts)
    stats = engine.prefix_stats()
    return {
        "kv_bytes_8_requests": stats.kv_bytes_used,
        "kv_bytes_one_prompt": (len(prompts[0]) // block) * engine.prefix_cache.block_bytes,
        "kv_shared_copies": (stats.blocks_used - unique_blocks) / shared_blocks,
        "shared_reads_8_requests": sum(1 for u in usages if u.cache_read_input_tokens > 0),
    }


def _common_prefix(prompts: list[tuple[int, ...]]) -> int:
    length = min(len(p) for p in prompts)
    for i in range(length):
        if len({p[i] for p in prompts}) > 1:
            return i
    return length


def measure_warm_load() -> dict[str, float]:
    """A fresh process loading the model (conversion cache warm by now).

    ``warm_load_s`` is the whole start -- interpreter, torch and transformers
    imports, then ``load_model`` -- as a user of ``promptcache serve`` waits
    for it; ``warm_load_model_only_s`` is ``load_model`` alone.
    """
    code = (
        "import time\n"
        "started = time.perf_counter()\n"
        "from promptcache.model.loading import load_model\n"
        "loaded = load_model()\n"
        "print(loaded.load_seconds, time.perf_counter() - started)\n"
    )
    begun = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    wall = time.perf_counter() - begun
    model_only, _ = (float(x) for x in out.strip().splitlines()[-1].split())
    return {"warm_load_s": wall, "warm_load_model_only_s": model_only}


def check(name: str, value: float) -> bool:
    op, target = TARGETS[name]
    return value >= target if op == ">=" else value <= target


def run(repeats: int, decode_tokens: int, progress: Callable[[str], None]) -> dict[str, Any]:
    progress("loading the embedded model")
    # One model thread for both engines, loading included (see model/torch_threads.py).
    executor = ModelExecutor()
    loaded = executor.call(functools.partial(load_model))
    cache_on = LocalEngine(
        LocalEngineConfig(prefix_cache=PrefixCacheConfig()), loaded=loaded, executor=executor
    )
    cache_off = LocalEngine(
        LocalEngineConfig(prefix_cache=PrefixCacheConfig(enabled=False)),
        loaded=loaded,
        executor=executor,
    )
    progress("TTFT miss / hit / limit")
    figures: dict[str, Any] = measure_ttft(cache_on, repeats)
    progress("zero-hit overhead")
    figures.update(measure_zero_hit_overhead(cache_on, cache_off, repeats))
    progress("decode throughput")
    rates = [measure_decode(cache_off, decode_tokens) for _ in range(repeats)]
    figures["decode_tok_s"] = max(rates)
    figures["decode_median_tok_s"] = statistics.median(rates)
    progress(f"{SHARED_REQUESTS} concurrent requests sharing the prefix")
    figures.update(measure_shared_kv(cache_on))
    progress("warm-start load (fresh process)")
    figures.update(measure_warm_load())
    progress("machine limits (benchmarks/machine_limits.py)")
    figures.update(limit_shares(cache_on, loaded, executor, figures, decode_tokens))
    figures["miss_over_hit"] = figures["ttft_miss_s"] / figures["ttft_hit_s"]
    figures["hit_over_limit"] = figures["ttft_hit_s"] / figures["ttft_limit_s"]
    figures["zero_hit_overhead"] = figures["ttft_cache_on_miss_s"] / figures["ttft_cache_off_s"]
    figures["targets_met"] = {name: check(name, figures[name]) for name in TARGETS}
    figures["torch_threads"] = torch.get_num_threads()
    return figures


def limit_shares(
    engine: LocalEngine,
    loaded: Any,
    executor: ModelExecutor,
    figures: dict[str, Any],
    decode_tokens: int,
) -> dict[str, Any]:
    """The miss's prefill GFLOP/s and decode's GB/s as shares of this machine's limits,
    measured on the model thread (a second thread's OpenMP team would slow it)."""
    limits = executor.call(functools.partial(machine_limits.measure, repeat=3))
    return machine_limits.engine_shares(
        limits,
        engine.runtime,
        loaded,
        prefill_tokens=figures["prompt_tokens"],
        prefill_seconds=figures["ttft_miss_s"],
        decode_tok_s=figures["decode_tok_s"],
        decode_context=32 + decode_tokens // 2,  # the story prompt, then half the tokens
        kv_dtype=engine.prefix_cache.layout.dtype,
    )


def print_table(f: dict[str, Any]) -> None:
    print(
        f"prompt {f['prompt_tokens']} tokens: {f['cached_tokens']} shared + "
        f"{f['suffix_tokens']} new"
    )
    print("                      fastest     median")
    for label, key in (
        ("TTFT miss", "ttft_miss"),
        ("TTFT hit", "ttft_hit"),
        ("TTFT limit (suffix)", "ttft_limit"),
        ("cache on, all miss", "ttft_cache_on_miss"),
        ("cache off", "ttft_cache_off"),
    ):
        print(f"{label:20} {f[key + '_s'] * 1000:8.1f} ms {f[key + '_median_s'] * 1000:8.1f} ms")
    print(f"decode {f['decode_tok_s']:.1f} tok/s (median {f['decode_median_tok_s']:.1f})")
    print(
        f"KV held by {SHARED_REQUESTS} requests sharing the prefix: "
        f"{f['kv_bytes_8_requests'] / 2**20:.1f} MiB (one prompt: "
        f"{f['kv_bytes_one_prompt'] / 2**20:.1f} MiB); {f['shared_reads_8_requests']} of "
        f"{SHARED_REQUESTS} read the shared prefix"
    )
    print(
        f"warm start {f['warm_load_s']:.2f} s in a fresh process "
        f"(load_model alone {f['warm_load_model_only_s']:.2f} s)"
    )
    print(machine_limits.describe_shares(f) + " (the miss's TTFT counted as its prefill)")
    print()
    for name, (op, target) in TARGETS.items():
        mark = "ok " if f["targets_met"][name] else "MISS"
        print(f"  [{mark}] {name:18} {f[name]:9.2f}   target {op} {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing")
    parser.add_argument("--decode-tokens", type=int, default=96, help="tokens for decode tok/s")
    args = parser.parse_args()
    if not 1 <= args.repeats <= len(OPENERS) - SHARED_REQUESTS - 1 or args.decode_tokens < 2:
        parser.error("--repeats must be within 1..17 and --decode-tokens >= 2")

    def progress(step: str) -> None:
        print(f"... {step}", file=sys.stderr, flush=True)

    figures = run(args.repeats, args.decode_tokens, progress)
    if args.json:
        print(json.dumps(figures, indent=None, sort_keys=True))
    else:
        print_table(figures)


if __name__ == "__main__":
    main()
