"""Decode and prefill speed per precision, side by side in one run.

Every variant is a :class:`LlamaRuntime` over the same loaded weights; repeats
interleave the variants so they share the machine's load, and the best repeat
of each is reported, with ratios and the 1-minute load average:

* decode tokens/s -- greedy, one stream, after a short chat prompt (from the
  median step time: robust to the OS preempting a step on a loaded machine), for each
  decode precision: ``float32`` (exact), ``float16`` (the former default) and
  ``int4`` (the GGUF's 4-bit blocks; needs a Q4_0/Q4_1 GGUF such as the
  embedded model), with the bytes of weights each token reads and the GB/s
  that makes;
* prefill tokens/s of one ``--prompt-tokens`` prompt (default 1,360: the issue's
  document size) for each prefill precision: ``float32`` (exact),
  ``bfloat16`` (where oneDNN has bfloat16 matmuls here: fixed-size row tiles)
  and ``int4`` (the fused decode layers on a Q4 GGUF's blocks: the engine's
  ``auto`` where they run; its GFLOP/s against the int8 dot-product peak);
* greedy agreement: tokens each precision produces before it first differs
  from float32 (``benchmarks/quantized_accuracy.py`` measures accuracy in depth).

Usage: ``python benchmarks/decode_speed.py [--model PATH] [--new-tokens 64]
[--prompt-tokens 1360] [--repeat 3] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import machine_limits
from promptcache.cli._progress import loading_progress
from promptcache.model.block_kernels import kernel_isa
from promptcache.model.loading import LoadedModel, load_model
from promptcache.model.precision import bfloat16_matmuls_supported
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
    parser.add_argument("--prompt-tokens", type=int, default=1360)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.new_tokens < 2 or args.prompt_tokens < 16 or args.repeat < 1:
        parser.error("need --new-tokens >= 2, --prompt-tokens >= 16, --repeat >= 1")

    with loading_progress(enabled=not args.json) as progress:
        loaded = load_model(args.model, progress=progress)
    decoders = {"float32": LlamaRuntime(loaded.weights)}
    decoders["float16"] = LlamaRuntime(loaded.weights, decode_precision="float16")
    try:
        decoders["int4"] = LlamaRuntime(loaded.weights, decode_precision="int4")
    except ValueError as error:  # not a Q4 GGUF: say so, measure the rest
        print(f"int4 decode not measured: {error}")
    prefillers = {"float32": decoders["float32"]}
    if bfloat16_matmuls_supported():
        prefillers["bfloat16"] = LlamaRuntime(loaded.weights, prefill_precision="bfloat16")
    try:  # prompts on the fused decode layers (needs int4 decode on the block kernels)
        prefillers["int4"] = LlamaRuntime(
            loaded.weights, decode_precision="int4", prefill_precision="int4"
        )
    except ValueError as error:
        print(f"int4 prompts not measured: {error}")
    short = chat_ids(loaded, "Tell me a story about a lighthouse keeper.")
    long = chat_ids(loaded, PARAGRAPH * (args.prompt_tokens // 30 + 10))[-args.prompt_tokens :]

    # Where int4 runs on the AVX-512 VNNI rows, the AVX2 rows too, side by side (the
    # same runtime, switched: their results are bitwise the same).
    runtimes: dict[str, LlamaRuntime] = dict(decoders)
    isas = {name: "auto" for name in runtimes}
    int4 = decoders.get("int4")
    on_blocks = int4 is not None and int4.decode_kernel == "gguf-blocks"
    if on_blocks and kernel_isa() != "avx2":
        runtimes["int4-avx2"], isas["int4-avx2"] = decoders["int4"], "avx2"
    decode: dict[str, float] = {}
    prefill: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    for _ in range(args.repeat):
        for name, runtime in runtimes.items():
            if runtime.decode_kernel == "gguf-blocks":
                kernel_isa(isas[name])
            rate, tokens[name] = runtime_decode(runtime, short, args.new_tokens)
            decode[name] = max(decode.get(name, 0.0), rate)
        if on_blocks:
            kernel_isa("auto")
        for name, runtime in prefillers.items():
            prefill[name] = max(prefill.get(name, 0.0), runtime_prefill(runtime, long))

    report: dict[str, Any] = {
        "decode_tok_s": {k: round(v, 1) for k, v in decode.items()},
        "decode_weight_mb_per_token": {
            k: round(r.weight_bytes("decode") / 1e6, 1) for k, r in runtimes.items()
        },
        "decode_gb_s": {
            k: round(decode[k] * r.weight_bytes("decode") / 1e9, 2) for k, r in runtimes.items()
        },
        "decode_ratio_vs_float16": {k: round(v / decode["float16"], 2) for k, v in decode.items()},
        "greedy_tokens_before_divergence_from_float32": {
            k: agreement(tokens["float32"], v) for k, v in tokens.items()
        },
        "prefill_tok_s": {k: round(v, 1) for k, v in prefill.items()},
        "prefill_ratio_vs_float32": {
            k: round(v / prefill["float32"], 2) for k, v in prefill.items()
        },
        "int4_kernel": int4.decode_kernel if int4 is not None else None,
        "int4_isa": kernel_isa() if on_blocks else None,
        "prompt_tokens": len(long),
        "new_tokens": args.new_tokens,
        "model_id": loaded.model_id,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    report["machine_limits"] = machine_limits.precision_shares(
        machine_limits.measure(repeat=3),
        loaded,
        decode_tok_s={k: (r, decode[k]) for k, r in runtimes.items()},
        decode_context=len(short) + args.new_tokens // 2,
        prefill_tok_s={k: (r, prefill[k]) for k, r in prefillers.items()},
        prompt_tokens=len(long),
    )
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"model {loaded.model_id}; load average {report['load_average_1m']} "
        f"on {os.cpu_count()} CPUs"
    )
    if report["int4_kernel"]:
        isa = f" on {report['int4_isa']}" if report["int4_isa"] else ""
        print(
            f"int4 runs on: {report['int4_kernel']}{isa} (PROMPTCACHE_BLOCK_KERNELS=0: torch-int4)"
        )
    print(f"{'decode':10}{'tok/s':>9}{'MB/token':>10}{'GB/s':>7}{'vs fp16':>9}{'agree':>7}")
    for name in runtimes:
        print(
            f"{name:10}{decode[name]:>9.1f}{report['decode_weight_mb_per_token'][name]:>10.1f}"
            f"{report['decode_gb_s'][name]:>7.2f}{report['decode_ratio_vs_float16'][name]:>8.2f}x"
            f"{report['greedy_tokens_before_divergence_from_float32'][name]:>7}"
        )
    print(
        f"prefill of {len(long)} tokens (the engine's auto: int4 where the fused layers run, "
        "else bfloat16 where it measures faster):"
    )
    for name in prefillers:
        print(
            f"{name:10}{prefill[name]:>9.1f} tok/s"
            f"{report['prefill_ratio_vs_float32'][name]:>8.2f}x float32"
        )
    print("\n".join(machine_limits.describe_precision_shares(report["machine_limits"])))


def chat_ids(loaded: LoadedModel, text: str) -> list[int]:
    tokenizer: Any = loaded.tokenizer  # apply_chat_template's return type is a wide union
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=False
    )
    return [int(i) for i in ids]


def agreement(reference: list[int], tokens: list[int]) -> int:
    """How many tokens ``tokens`` shares with ``reference`` before the first difference."""
    for index, (want, got) in enumerate(zip(reference, tokens, strict=False)):
        if want != got:
            return index
    return min(len(reference), len(tokens))


def runtime_decode(runtime: LlamaRuntime, ids: list[int], count: int) -> tuple[float, list[int]]:
    """Tokens/s from the median step time (a step the OS preempted on a shared machine
    does not count more than any other), and the greedy tokens."""
    kv = runtime.new_kv(len(ids) + count + 1)
    logits = runtime.prefill(ids, kv, 0)
    tokens = [int(torch.argmax(logits))]
    seconds: list[float] = []
    for step in range(count - 1):
        started = time.perf_counter()
        logits = runtime.step(tokens[-1], kv, len(ids) + step)
        tokens.append(int(torch.argmax(logits)))
        seconds.append(time.perf_counter() - started)
    return 1.0 / statistics.median(seconds), tokens


def runtime_prefill(runtime: LlamaRuntime, ids: list[int]) -> float:
    kv = runtime.new_kv(len(ids))
    started = time.perf_counter()
    runtime.prefill(ids, kv, 0)
    return len(ids) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
