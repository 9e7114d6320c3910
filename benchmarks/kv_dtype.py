"""``--kv-dtype``: tokens cached per GiB, prefill/decode speed and hit == miss, per dtype, one run.

On the embedded SmolLM2 (the engine's default decode and prefill precisions),
for each KV dtype (float32, float16, bfloat16):

* **tokens per GiB** -- 2^30 over the bytes one token's KV takes (all layers,
  keys and values): what a ``--kv-cache-bytes`` budget holds;
* **prefill tok/s** -- a ``--prompt-tokens`` prompt into an empty buffer of
  that dtype (attention runs in the KV's dtype), best of ``--repeat``;
* **decode tok/s** -- ``--new-tokens`` greedy steps after that prompt;
* **hit == miss** -- ``--cases`` conversations, each a shared prefix computed
  by an earlier, shorter request (as the prefix cache stores it: whole blocks)
  and then continued, against the same prompt computed in one pass; the greedy
  continuations (``--compare-tokens``) must be identical. This is the cache's
  guarantee; the count of cases where it held is printed per dtype.

Runs interleave the dtypes repeat by repeat so they share the machine's load.
``--json`` prints one object with ``tokens_per_gib_ratio`` (best 16-bit dtype
over float32) next to the per-dtype figures.

Usage: ``python benchmarks/kv_dtype.py [--prompt-tokens 1360] [--new-tokens 64]
[--repeat 3] [--cases 8] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

from promptcache.engine.local import LocalEngineConfig
from promptcache.model.loading import LoadedModel, load_model
from promptcache.model.runtime import LlamaRuntime
from promptcache.prefix.pool import KV_DTYPES, KVLayout

BLOCK = 16
"""The prefix cache's default block size: a hit restores whole blocks only."""
TOPICS = ("tides", "bread", "trains", "bees", "glaciers", "violins", "maps", "comets")


def chat_ids(loaded: LoadedModel, turns: list[tuple[str, str]]) -> list[int]:
    tokenizer: Any = loaded.tokenizer  # apply_chat_template's return type is a wide union
    messages = [{"role": role, "content": text} for role, text in turns]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return [int(i) for i in ids]


def conversation(loaded: LoadedModel, case: int) -> tuple[list[int], list[int]]:
    """(the earlier request's prompt, the later one's): the later extends the earlier."""
    topic = TOPICS[case % len(TOPICS)]
    system = f"You are a patient tutor. Explain {topic} to a curious twelve year old. " * (
        2 + case % 3
    )
    first = [("system", system), ("user", f"Why do {topic} matter? ({case})")]
    later = [
        *first,
        ("assistant", f"Great question! {topic.capitalize()} matter in more ways than one."),
        ("user", "Tell me one surprising fact, then a second one."),
    ]
    return chat_ids(loaded, first), chat_ids(loaded, later)


def greedy(
    runtime: LlamaRuntime, ids: list[int], kv: torch.Tensor, start: int, n: int
) -> list[int]:
    """Prefill ``ids[start:]`` over ``kv[..., :start]``, then ``n`` greedy tokens."""
    logits = runtime.prefill(ids[start:], kv, start)
    out = [int(torch.argmax(logits))]
    for step in range(n - 1):
        out.append(int(torch.argmax(runtime.step(out[-1], kv, len(ids) + step))))
    return out


def hit_equals_miss(
    runtime: LlamaRuntime, dtype: torch.dtype, earlier: list[int], later: list[int], n: int
) -> bool:
    """The later prompt continued after restoring the earlier one's whole blocks, against
    the later prompt computed from scratch: the same greedy tokens?"""
    cached = runtime.new_kv(len(earlier), dtype)
    runtime.prefill(earlier, cached, 0)
    restored = (min(len(earlier), len(later) - 1) // BLOCK) * BLOCK
    assert later[:restored] == earlier[:restored], "the later prompt must extend the earlier"
    hit = runtime.new_kv(len(later) + n, dtype)
    hit[:, :, :, :restored].copy_(cached[:, :, :, :restored])
    miss = runtime.new_kv(len(later) + n, dtype)
    return greedy(runtime, later, hit, restored, n) == greedy(runtime, later, miss, 0, n)


def speeds(
    runtime: LlamaRuntime, dtype: torch.dtype, prompt: list[int], n: int
) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) of ``prompt`` then ``n`` greedy steps in ``dtype`` KV."""
    kv = runtime.new_kv(len(prompt) + n, dtype)
    started = time.perf_counter()
    logits = runtime.prefill(prompt, kv, 0)
    prefill = len(prompt) / (time.perf_counter() - started)
    token = int(torch.argmax(logits))
    started = time.perf_counter()
    for step in range(n - 1):
        token = int(torch.argmax(runtime.step(token, kv, len(prompt) + step)))
    return prefill, (n - 1) / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    loaded = load_model(args.model)
    # The engine's default precisions, whatever they are now.
    runtime = LlamaRuntime(loaded.weights, decode_precision=LocalEngineConfig().decode_precision)
    text = " ".join(
        f"Note {i}: the {TOPICS[i % 8]} survey counted {i * 37 % 500} items." for i in range(400)
    )
    prompt = chat_ids(loaded, [("user", text)])[-args.prompt_tokens :]
    figures: dict[str, dict[str, Any]] = {}
    for name, dtype in KV_DTYPES.items():
        layout = KVLayout(
            num_layers=runtime.num_layers,
            num_kv_heads=runtime.num_kv_heads,
            head_dim=runtime.head_dim,
            dtype=dtype,
        )
        figures[name] = {
            "bytes_per_token": layout.bytes_per_token,
            "tokens_per_gib": (1 << 30) // layout.bytes_per_token,
            "prefill_tok_s": 0.0,
            "decode_tok_s": 0.0,
        }
    for _ in range(args.repeat):
        for name, dtype in KV_DTYPES.items():
            prefill, decode = speeds(runtime, dtype, prompt, args.new_tokens)
            entry = figures[name]
            entry["prefill_tok_s"] = round(max(entry["prefill_tok_s"], prefill), 1)
            entry["decode_tok_s"] = round(max(entry["decode_tok_s"], decode), 1)
    cases = [conversation(loaded, case) for case in range(args.cases)]
    for name, dtype in KV_DTYPES.items():
        progress(f"{name}: {figures[name]}; hit == miss over {len(cases)} conversations")
        held = sum(
            hit_equals_miss(runtime, dtype, earlier, later, args.compare_tokens)
            for earlier, later in cases
        )
        figures[name]["hit_equals_miss"] = f"{held}/{len(cases)}"
        figures[name]["faithful"] = held == len(cases)
    base = figures["float32"]
    best_half = max(
        (name for name in KV_DTYPES if name != "float32" and figures[name]["faithful"]),
        key=lambda name: figures[name]["tokens_per_gib"],
        default=None,
    )
    return {
        "dtypes": figures,
        "tokens_per_gib_ratio": (
            round(figures[best_half]["tokens_per_gib"] / base["tokens_per_gib"], 2)
            if best_half
            else None
        ),
        "best_faithful_16_bit": best_half,
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "cases": args.cases,
        "compare_tokens": args.compare_tokens,
        "decode_precision": runtime.decode_precision,
        "prefill_precision": runtime.prefill_precision,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def progress(line: str) -> None:
    print(f"... {line}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="GGUF or HF dir (default: embedded)")
    parser.add_argument("--prompt-tokens", type=int, default=1360)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--compare-tokens", type=int, default=24)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's setting)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if min(args.prompt_tokens, args.new_tokens, args.compare_tokens) < 2 or args.repeat < 1:
        parser.error("need --prompt-tokens, --new-tokens, --compare-tokens >= 2, --repeat >= 1")
    if args.cases < 1:
        parser.error("need --cases >= 1")
    report = run(args)
    if args.json:
        print(json.dumps(report))
        return
    base = report["dtypes"]["float32"]
    print(
        f"{'kv dtype':10}{'tok/GiB':>10}{'x f32':>7}{'prefill tok/s':>15}{'decode tok/s':>14}"
        f"{'hit==miss':>11}"
    )
    for name, entry in report["dtypes"].items():
        print(
            f"{name:10}{entry['tokens_per_gib']:>10,}"
            f"{entry['tokens_per_gib'] / base['tokens_per_gib']:>6.1f}x"
            f"{entry['prefill_tok_s']:>15.1f}{entry['decode_tok_s']:>14.1f}"
            f"{entry['hit_equals_miss']:>11}"
        )
    print(
        f"prefill of {report['prompt_tokens']} tokens, decode of {report['new_tokens']} after it; "
        f"hit == miss over {report['cases']} conversations x {report['compare_tokens']} tokens; "
        f"best faithful 16-bit dtype: {report['best_faithful_16_bit']} "
        f"({report['tokens_per_gib_ratio']}x the tokens per GiB of float32); weights: "
        f"prefill {report['prefill_precision']}, decode {report['decode_precision']}; "
        f"load average {report['load_average_1m']} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
