"""What each precision changes in the output, against the exact float32 weights, in one run.

For every decode precision (``int4``: the GGUF's 4-bit blocks on the CPU int4
kernel, ``float16``) and prefill precision (``bfloat16``; ``int4``, which decodes
in ``int4`` too: the prompt tokens through the fused decode layers), on the embedded
SmolLM2 (or ``--model``):

* **greedy agreement** -- over several chat prompts, how many tokens the
  precision generates before it first differs from float32 (``--new-tokens``
  each; equal to it means no divergence);
* **mean log-likelihood** per token of a fixed English text, teacher-forced:
  decode precisions through one-token decode steps (what decoding runs),
  prefill precisions through one prompt forward; and its difference from
  float32's (nats per token; negative = the precision finds the text less
  likely).

Accuracy, not speed: ``benchmarks/decode_speed.py`` times the same variants.

Usage: ``python benchmarks/quantized_accuracy.py [--model PATH] [--new-tokens 48] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from decode_speed import agreement, chat_ids
from promptcache.cli._progress import loading_progress
from promptcache.model.loading import load_model
from promptcache.model.precision import bfloat16_matmuls_supported
from promptcache.model.runtime import LlamaRuntime

PROMPTS = (
    "Write a short poem about the sea.",
    "Explain what a prefix cache is, in two sentences.",
    "List five fruits that are red.",
    "What is the capital of France, and why is it famous?",
    "Give me three tips for writing clean Python code.",
    "Describe a lighthouse keeper's morning.",
)
TEXT = (
    "The lighthouse stood at the end of a long stone pier, and every evening the keeper "
    "climbed its hundred and twelve steps to light the lamp. Ships passing in the night "
    "relied on its beam to find the harbour entrance, which was narrow and lined with "
    "rocks. In winter the storms were fierce, and waves broke over the pier so that the "
    "keeper had to wait for a lull before he could cross. He kept a log of every ship he "
    "saw, noting its name, the time and the weather, and over forty years the log filled "
    "eleven thick volumes that are now kept in the town museum."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: embedded)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.new_tokens < 1:
        parser.error("--new-tokens must be at least 1")
    with loading_progress(enabled=not args.json) as progress:
        loaded = load_model(args.model, progress=progress)

    reference = LlamaRuntime(loaded.weights)
    variants: dict[str, LlamaRuntime] = {
        "decode float16": LlamaRuntime(loaded.weights, decode_precision="float16")
    }
    try:
        variants["decode int4"] = LlamaRuntime(loaded.weights, decode_precision="int4")
    except ValueError as error:
        print(f"int4 not measured: {error}")
    try:  # the engine's auto on a Q4 GGUF: prompts on the fused decode layers too
        variants["prefill int4"] = LlamaRuntime(
            loaded.weights, decode_precision="int4", prefill_precision="int4"
        )
    except ValueError as error:
        print(f"int4 prompts not measured: {error}")
    if bfloat16_matmuls_supported():
        variants["prefill bfloat16"] = LlamaRuntime(loaded.weights, prefill_precision="bfloat16")

    prompts = [chat_ids(loaded, text) for text in PROMPTS]
    text_ids = [int(i) for i in loaded.tokenizer(TEXT)["input_ids"]]
    wanted = [reference.greedy(ids, args.new_tokens) for ids in prompts]
    base_decode = decode_log_likelihood(reference, text_ids)
    base_prefill = prefill_log_likelihood(reference, text_ids)
    report: dict[str, Any] = {
        "float32": {
            "mean_log_likelihood_decode": round(base_decode, 5),
            "mean_log_likelihood_prefill": round(base_prefill, 5),
        }
    }
    for name, runtime in variants.items():
        agree = [
            agreement(want, runtime.greedy(ids, args.new_tokens))
            for want, ids in zip(wanted, prompts, strict=True)
        ]
        role = name.split()[0]
        ll = (
            decode_log_likelihood(runtime, text_ids)
            if role == "decode"
            else prefill_log_likelihood(runtime, text_ids)
        )
        base = base_decode if role == "decode" else base_prefill
        report[name] = {
            "greedy_tokens_before_divergence": agree,
            "prompts_fully_identical": sum(a == args.new_tokens for a in agree),
            "mean_log_likelihood": round(ll, 5),
            "delta_vs_float32": round(ll - base, 5),
        }
    if "decode int4" in variants:
        report["int4_kernel"] = variants["decode int4"].decode_kernel
    report["prompts"] = len(prompts)
    report["new_tokens"] = args.new_tokens
    report["text_tokens"] = len(text_ids)
    report["model_id"] = loaded.model_id
    report["load_average_1m"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(report))
        return
    print(f"model {loaded.model_id}; {len(prompts)} prompts x {args.new_tokens} greedy tokens")
    print(f"float32 mean log-likelihood: decode {base_decode:.4f}, prefill {base_prefill:.4f}")
    if "int4_kernel" in report:
        print(f"int4 runs on: {report['int4_kernel']} (PROMPTCACHE_BLOCK_KERNELS=0: torch-int4)")
    for name in variants:
        row = report[name]
        print(
            f"{name:18} agreement {row['greedy_tokens_before_divergence']} "
            f"({row['prompts_fully_identical']}/{len(prompts)} identical); "
            f"log-likelihood {row['mean_log_likelihood']:.4f} ({row['delta_vs_float32']:+.4f})"
        )


def decode_log_likelihood(runtime: LlamaRuntime, ids: list[int]) -> float:
    """Mean log-probability of ``ids[1:]``, each predicted by a one-token decode step."""
    kv = runtime.new_kv(len(ids))
    total = 0.0
    logits = runtime.forward(ids[:1], kv, 0)
    for position, token in enumerate(ids[1:], start=1):
        total += float(torch.log_softmax(logits, -1)[token])
        if position < len(ids) - 1:
            logits = runtime.step(token, kv, position)
    return total / (len(ids) - 1)


def prefill_log_likelihood(runtime: LlamaRuntime, ids: list[int]) -> float:
    """Mean log-probability of ``ids[1:]`` from one prompt forward over all of ``ids``."""
    logits = runtime.forward(ids, runtime.new_kv(len(ids)), 0, all_logits=True)
    picked = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])
    return float(picked.mean())


if __name__ == "__main__":
    main()
