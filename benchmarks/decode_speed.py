"""Decode and prefill speed: Hugging Face transformers against LlamaRuntime, one run.

Both run the same float32 weights, interleaved repeat by repeat so they share
the machine's load conditions; the best repeat of each is reported.

* decode tokens/s -- greedy, batch 1, after a short chat prompt. HF is timed
  through ``generate`` as ``N / (t(N + 1 new tokens) - t(1 new token))`` so
  its prefill cancels out; the runtime is timed over its one-token steps.
* prefill tokens/s -- one ~2,000-token prompt (HF: one ``model(...)`` call;
  runtime: ``prefill`` in 512-token chunks).
* the runtime's decode tokens/s right after the long prompt (2k context);
* the runtime's opt-in float16-weight decode (``decode_weight_dtype``).
* load seconds of the model (warm when the converted weights are cached).

Usage: ``python benchmarks/decode_speed.py [--model PATH] [--new-tokens 64]
[--prompt-tokens 2000] [--repeat 3] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from promptcache.cli._progress import loading_progress
from promptcache.model.loading import LoadedModel, load_model
from promptcache.model.runtime import LlamaRuntime

PARAGRAPH = (
    "Prompt caching keeps the key and value tensors of a shared prefix so that "
    "later requests starting with the same tools, system prompt or documents do "
    "not pay to compute them again. "
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="GGUF or HF dir (default: embedded)"
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.new_tokens < 2 or args.prompt_tokens < 16 or args.repeat < 1:
        parser.error("need --new-tokens >= 2, --prompt-tokens >= 16, --repeat >= 1")

    with loading_progress(enabled=not args.json) as progress:
        loaded = load_model(args.model, progress=progress)
    runtime = LlamaRuntime(loaded.model)
    half = LlamaRuntime(loaded.model, decode_weight_dtype=torch.float16)
    short = chat_ids(loaded, "Tell me a story about a lighthouse keeper.")
    long = chat_ids(loaded, PARAGRAPH * (args.prompt_tokens // 30 + 10))[-args.prompt_tokens :]

    best: dict[str, float] = {}
    same_tokens = same_half = True
    for _ in range(args.repeat):
        hf_rate, hf_tokens = hf_decode(loaded, short, args.new_tokens)
        rt_rate, rt_tokens = runtime_decode(runtime, short, args.new_tokens)
        half_rate, half_tokens = runtime_decode(half, short, args.new_tokens)
        same_tokens = same_tokens and hf_tokens == rt_tokens
        same_half = same_half and half_tokens == rt_tokens
        record(best, "hf_decode_tok_s", hf_rate)
        record(best, "runtime_decode_tok_s", rt_rate)
        record(best, "runtime_fp16_weights_decode_tok_s", half_rate)
        record(best, "hf_prefill_tok_s", hf_prefill(loaded, long))
        rt_prefill_rate, rt_long_decode = runtime_prefill_then_decode(
            runtime, long, args.new_tokens
        )
        record(best, "runtime_prefill_tok_s", rt_prefill_rate)
        record(best, "runtime_decode_tok_s_at_prompt_len", rt_long_decode)

    report: dict[str, Any] = {
        **{k: round(v, 2) for k, v in best.items()},
        "decode_speedup": round(best["runtime_decode_tok_s"] / best["hf_decode_tok_s"], 2),
        "prefill_speedup": round(best["runtime_prefill_tok_s"] / best["hf_prefill_tok_s"], 2),
        "fp16_weights_decode_speedup": round(
            best["runtime_fp16_weights_decode_tok_s"] / best["hf_decode_tok_s"], 2
        ),
        "same_greedy_tokens": same_tokens,
        "same_greedy_tokens_fp16_weights": same_half,
        "prompt_tokens": len(long),
        "new_tokens": args.new_tokens,
        "load_s": round(loaded.load_seconds, 2),
        "load_from_cache": loaded.from_cache,
        "model_id": loaded.model_id,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"model {loaded.model_id}  (load {report['load_s']} s, cached={loaded.from_cache})")
    print(f"{'':24}{'transformers':>14}{'LlamaRuntime':>14}{'ratio':>8}")
    print(
        f"{'decode tok/s':24}{best['hf_decode_tok_s']:>14.1f}"
        f"{best['runtime_decode_tok_s']:>14.1f}{report['decode_speedup']:>7.2f}x"
    )
    print(
        f"{f'prefill tok/s ({len(long)} tok)':24}{best['hf_prefill_tok_s']:>14.1f}"
        f"{best['runtime_prefill_tok_s']:>14.1f}{report['prefill_speedup']:>7.2f}x"
    )
    print(
        f"{'decode, fp16 weights':24}{'':>14}"
        f"{best['runtime_fp16_weights_decode_tok_s']:>14.1f}"
        f"{report['fp16_weights_decode_speedup']:>7.2f}x"
    )
    print(
        f"runtime decode after the {len(long)}-token prompt: "
        f"{best['runtime_decode_tok_s_at_prompt_len']:.1f} tok/s"
    )
    print(
        f"greedy tokens identical: {same_tokens} (fp16 weights: {same_half}); "
        f"load average {report['load_average_1m']} on {os.cpu_count()} CPUs"
    )


def chat_ids(loaded: LoadedModel, text: str) -> list[int]:
    tokenizer: Any = loaded.tokenizer  # apply_chat_template's return type is a wide union
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=False
    )
    return [int(i) for i in ids]


def record(best: dict[str, float], key: str, value: float) -> None:
    best[key] = max(best.get(key, 0.0), value)


def hf_generate(loaded: LoadedModel, ids: list[int], count: int) -> tuple[float, list[int]]:
    prompt = torch.tensor([ids])
    model: Any = loaded.model  # generate() is typed loosely (a Tensor-or-module union)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=count,
            min_new_tokens=count,
            do_sample=False,
        )
    return time.perf_counter() - started, [int(t) for t in out[0, len(ids) :]]


def hf_decode(loaded: LoadedModel, ids: list[int], count: int) -> tuple[float, list[int]]:
    first, _ = hf_generate(loaded, ids, 1)
    total, tokens = hf_generate(loaded, ids, count + 1)
    return count / max(total - first, 1e-9), tokens[:count]


def runtime_decode(runtime: LlamaRuntime, ids: list[int], count: int) -> tuple[float, list[int]]:
    kv = runtime.new_kv(len(ids) + count + 1)
    logits = runtime.prefill(ids, kv, 0)
    tokens = [int(torch.argmax(logits))]
    started = time.perf_counter()
    for step in range(count - 1):
        logits = runtime.forward(tokens[-1:], kv, len(ids) + step)
        tokens.append(int(torch.argmax(logits)))
    return (count - 1) / (time.perf_counter() - started), tokens


def hf_prefill(loaded: LoadedModel, ids: list[int]) -> float:
    model: Any = loaded.model  # PreTrainedModel.__call__ is untyped
    started = time.perf_counter()
    with torch.inference_mode():
        model(torch.tensor([ids]), use_cache=True)
    return len(ids) / (time.perf_counter() - started)


def runtime_prefill_then_decode(
    runtime: LlamaRuntime, ids: list[int], count: int
) -> tuple[float, float]:
    kv = runtime.new_kv(len(ids) + count)
    started = time.perf_counter()
    logits = runtime.prefill(ids, kv, 0)
    prefill_rate = len(ids) / (time.perf_counter() - started)
    token = int(torch.argmax(logits))
    started = time.perf_counter()
    for step in range(count - 1):
        token = int(torch.argmax(runtime.forward([token], kv, len(ids) + step)))
    return prefill_rate, (count - 1) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
