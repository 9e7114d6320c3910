"""What structured outputs cost in the local engine: constrained against free decoding.

One run on the embedded model, interleaved repeat by repeat so both see the
same machine load; the best repeat of each is reported:

* decode tokens/s of a greedy answer forced to run ``--new-tokens`` tokens,
  free, and constrained by a JSON schema (a long string field, so the grammar
  is live at every step and the answer cannot end early);
* the ratio (target: the constraint costs at most a few percent);
* the one-time build of llguidance's view of the tokenizer, and a grammar compile.

Usage: ``python benchmarks/structured_output.py [--new-tokens 64] [--repeat 3] [--json]``
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from typing import Any

from promptcache.cli._progress import loading_progress
from promptcache.engine.local import LocalEngine
from promptcache.engine.local.executor import ModelExecutor
from promptcache.model.loading import load_model
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock
from promptcache.result import Result, TextDelta

QUESTION = "Write a long story about a lighthouse keeper and the sea."


def request(new_tokens: int, response_format: dict[str, Any] | None) -> ChatRequest:
    return ChatRequest(
        model="bench",
        messages=(Message(role="user", content=(TextBlock(text=QUESTION),)),),
        sampling=SamplingParams(max_tokens=new_tokens),
        response_format=response_format,
    )


def timed(engine: LocalEngine, req: ChatRequest) -> tuple[float, int]:
    """(seconds from the first generated token to the last, tokens generated)."""
    first: float | None = None
    for event in engine.generate(req):
        if first is None and isinstance(event, TextDelta):
            first = time.perf_counter()
        if isinstance(event, Result):
            tokens = event.usage.output_tokens
    assert first is not None
    return time.perf_counter() - first, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.new_tokens < 8 or args.repeat < 1:
        parser.error("need --new-tokens >= 8 and --repeat >= 1")

    executor = ModelExecutor()  # loads on the model thread too (model/torch_threads.py)
    with loading_progress(enabled=not args.json) as progress:
        loaded = executor.call(functools.partial(load_model, progress=progress))
    engine = LocalEngine(loaded=loaded, executor=executor)
    schema = {
        "type": "object",
        "properties": {"story": {"type": "string", "minLength": 20 * args.new_tokens}},
        "required": ["story"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "story", "schema": schema}}
    free, constrained = request(args.new_tokens, None), request(args.new_tokens, fmt)

    began = time.perf_counter()
    engine._grammars.for_request(constrained)  # builds llguidance's tokenizer
    tokenizer_build_s = time.perf_counter() - began
    began = time.perf_counter()
    engine._grammars.for_request(constrained)
    grammar_compile_ms = (time.perf_counter() - began) * 1e3

    list(engine.generate(free))  # warm-up; caches the prompt for both variants
    best = {"free": 0.0, "constrained": 0.0}
    for _ in range(args.repeat):
        for name, req in (("free", free), ("constrained", constrained)):
            seconds, tokens = timed(engine, req)
            assert tokens == args.new_tokens, f"{name} stopped after {tokens} tokens"
            best[name] = max(best[name], (tokens - 1) / seconds)
    figures = {
        "new_tokens": args.new_tokens,
        "free_decode_tok_s": round(best["free"], 1),
        "constrained_decode_tok_s": round(best["constrained"], 1),
        "constrained_over_free": round(best["constrained"] / best["free"], 3),
        "tokenizer_build_s": round(tokenizer_build_s, 3),
        "grammar_compile_ms": round(grammar_compile_ms, 2),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:>26}  {value}")


if __name__ == "__main__":
    main()
