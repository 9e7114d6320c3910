"""Concurrent streams on the local engine: decode steps batched together against one by one.

One run on the embedded model. ``--streams`` threads each ask a distinct short
question and decode ``--new-tokens`` tokens greedily (forced: no early end),
all at once, on an engine that batches concurrent decode steps and on one that
runs them one at a time (``decode_batch=1``), alternating repeat by repeat so
both see the same machine load; the best repeat of each is reported:

* aggregate decode tokens/s over all streams (first token to last, per the
  slowest stream) and the ratio batched / one-by-one;
* the mean batch size the batched engine reached;
* the single-stream decode tokens/s for reference;
* scaling: the batched engine's aggregate tokens/s at 1, 2, 4, ... ``--streams``
  concurrent streams, each as a multiple of one stream's, and the stream count
  with the most tokens/s (what ``serve --engine-workers`` defaults to).

Both engines decode with ``--decode-precision`` (default: the engine's own,
``auto``: the GGUF's 4-bit blocks for the embedded model), batched through the
same kernels at every batch size.

Usage: ``python benchmarks/concurrent_decode.py [--streams 8] [--new-tokens 64]
[--repeat 3] [--decode-precision auto] [--json]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import threading
import time

from promptcache.cli._progress import loading_progress
from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.local.executor import ModelExecutor
from promptcache.model.loading import load_model
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock
from promptcache.result import Result, TextDelta

TOPICS = (
    "lighthouses",
    "glaciers",
    "orchards",
    "harbors",
    "comets",
    "forests",
    "deserts",
    "rivers",
)


def request(topic: str, new_tokens: int) -> ChatRequest:
    return ChatRequest(
        model="bench",
        messages=(
            Message(role="user", content=(TextBlock(text=f"Write a long essay about {topic}."),)),
        ),
        sampling=SamplingParams(max_tokens=new_tokens),
    )


def run_streams(engine: LocalEngine, streams: int, new_tokens: int) -> float:
    """Aggregate decode tokens/s of ``streams`` concurrent requests."""
    first: list[float] = []
    last: list[float] = []
    tokens: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(streams)

    def one(topic: str) -> None:
        start.wait()
        seen_first = None
        for event in engine.generate(request(topic, new_tokens)):
            if seen_first is None and isinstance(event, TextDelta):
                seen_first = time.perf_counter()
            if isinstance(event, Result):
                with lock:
                    first.append(seen_first or time.perf_counter())
                    last.append(time.perf_counter())
                    tokens.append(event.usage.output_tokens)

    threads = [threading.Thread(target=one, args=(TOPICS[i],)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(tokens) == streams and all(t == new_tokens for t in tokens), tokens
    # Decode phase: from the latest first token (every stream decoding) to the last end.
    return sum(t - 1 for t in tokens) / (max(last) - min(first))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--decode-precision", default="auto", choices=("auto", "int4", "float16", "float32")
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not 2 <= args.streams <= len(TOPICS) or args.new_tokens < 8 or args.repeat < 1:
        parser.error(f"need 2 <= --streams <= {len(TOPICS)}, --new-tokens >= 8, --repeat >= 1")

    # One model thread for both engines, which loads the model too: two would each claim
    # every core, and so would the main thread if it ran the loading (model/torch_threads.py).
    executor = ModelExecutor()
    with loading_progress(enabled=not args.json) as progress:
        loaded = executor.call(functools.partial(load_model, progress=progress))
    no_cache = PrefixCacheConfig(enabled=False)  # every repeat does the same work
    precision = args.decode_precision
    batched = LocalEngine(
        LocalEngineConfig(prefix_cache=no_cache, decode_precision=precision, decode_batch=8),
        loaded=loaded,
        executor=executor,
    )
    serial = LocalEngine(
        LocalEngineConfig(prefix_cache=no_cache, decode_precision=precision, decode_batch=1),
        loaded=loaded,
        executor=executor,
    )
    for engine in (batched, serial):  # warm-up
        run_streams(engine, 2, 8)
    before = batched.batching_stats()
    best = {"batched": 0.0, "serial": 0.0, "single": 0.0}
    for _ in range(args.repeat):
        best["batched"] = max(best["batched"], run_streams(batched, args.streams, args.new_tokens))
        best["serial"] = max(best["serial"], run_streams(serial, args.streams, args.new_tokens))
        best["single"] = max(best["single"], run_streams(serial, 1, args.new_tokens))
    after = batched.batching_stats()
    counts = [n for n in (1, 2, 4, 6, 8) if n < args.streams] + [args.streams]
    scaling: dict[int, float] = {}
    for _ in range(args.repeat):
        for count in counts:
            rate = run_streams(batched, count, args.new_tokens)
            scaling[count] = max(scaling.get(count, 0.0), rate)
    best_count = max(scaling, key=lambda count: scaling[count])
    figures = {
        "streams": args.streams,
        "new_tokens": args.new_tokens,
        "batched_tok_s": round(best["batched"], 1),
        "one_by_one_tok_s": round(best["serial"], 1),
        "batched_over_one_by_one": round(best["batched"] / best["serial"], 2),
        "mean_batch": round((after.steps - before.steps) / (after.batches - before.batches), 2),
        "single_stream_tok_s": round(best["single"], 1),
        "decode_precision": batched.decode_precision,
        "scaling_tok_s": {str(n): round(v, 1) for n, v in scaling.items()},
        "scaling_vs_one_stream": {str(n): round(v / scaling[1], 2) for n, v in scaling.items()},
        "most_tok_s_at_streams": best_count,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:>24}  {value}")


if __name__ == "__main__":
    main()
