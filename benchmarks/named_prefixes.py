"""A named, pinned prefix: what pinning costs and what the first request after it saves.

One run on the embedded SmolLM2 with a ~3,350-token prefix (system prompt and a
first user turn) pinned as a named prefix (``pin_prefix``, what ``POST
/v1/cache/prefixes`` and ``--warm`` call), then a request that continues it
with one more exchange. Side by side, variants interleaved ``--repeats`` times
on an emptied cache:

* ``cold``: the request alone (nothing cached): its time to first token;
* ``pinned``: the prefix pinned first (its seconds reported), then the request:
  its time to first token and its cached tokens (the pinned ones, exactly).

Ratios use the fastest run of each (the one least disturbed by a shared
machine); medians are shown beside them. The greedy answers of both variants
must be the same text (the cache's faithfulness). ``--json``: one object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock
from promptcache.result import Result, TextDelta

RULES = 150  # 3,357 prefix tokens with the first user turn


def prefix_request() -> ChatRequest:
    system = "\n".join(
        f"Rule {i} of the harbour archive: record {i * 7 + 3} is kept in room {i % 11}."
        for i in range(RULES)
    )
    return ChatRequest(
        model="SmolLM2-135M-Instruct",
        system=(TextBlock(text=system),),
        messages=(Message(role="user", content=(TextBlock(text="Here is the archive."),)),),
    )


def follow_up(base: ChatRequest) -> ChatRequest:
    more = (
        Message(role="assistant", content=(TextBlock(text="Noted."),)),
        Message(role="user", content=(TextBlock(text="Which room keeps record 52?"),)),
    )
    return ChatRequest(
        model=base.model,
        system=base.system,
        messages=base.messages + more,
        sampling=SamplingParams(max_tokens=8, temperature=0),
    )


def timed_request(engine: LocalEngine, request: ChatRequest) -> tuple[float, int, str]:
    """(seconds to the first token, cached prompt tokens, the answer)."""
    started = time.perf_counter()
    first: float | None = None
    for event in engine.generate(request):
        if first is None and isinstance(event, TextDelta | Result):
            first = time.perf_counter() - started
        if isinstance(event, Result):
            return first or 0.0, event.usage.cache_read_input_tokens, event.choices[0].text
    raise RuntimeError("no result")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    engine = LocalEngine.from_config(LocalEngineConfig())
    base = prefix_request()
    request = follow_up(base)
    cold: list[float] = []
    pinned: list[float] = []
    pin_seconds: list[float] = []
    answers: set[str] = set()
    cached = pinned_tokens = 0
    for _ in range(args.repeats):
        engine.clear_prefix_cache()
        ttft, hit, answer = timed_request(engine, request)
        cold.append(ttft)
        answers.add(answer)
        assert hit == 0, hit
        engine.clear_prefix_cache()
        started = time.perf_counter()
        prefix = engine.pin_prefix(base, ttl_seconds=600, name=None, model=base.model)
        pin_seconds.append(time.perf_counter() - started)
        ttft, cached, answer = timed_request(engine, request)
        pinned.append(ttft)
        answers.add(answer)
        pinned_tokens = prefix.cached_tokens
        assert cached == pinned_tokens, (cached, pinned_tokens)
    engine.clear_prefix_cache()
    figures: dict[str, Any] = {
        "prefix_tokens": prefix.tokens,
        "pinned_tokens": pinned_tokens,
        "request_cached_tokens": cached,
        "pin_s": round(min(pin_seconds), 4),
        "cold_ttft_s": round(min(cold), 4),
        "pinned_ttft_s": round(min(pinned), 4),
        "cold_ttft_median_s": round(statistics.median(cold), 4),
        "pinned_ttft_median_s": round(statistics.median(pinned), 4),
        "cold_over_pinned": round(min(cold) / min(pinned), 2),
        "same_answer": len(answers) == 1,
    }
    if args.json:
        print(json.dumps(figures))
        return
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
