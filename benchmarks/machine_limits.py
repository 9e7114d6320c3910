"""This machine's limits: memory bandwidth and peak matmul throughput per dtype, one run.

What the engine's speed should be judged against. Decoding a small model on a
CPU reads every weight (and the KV so far) once per token, so its ceiling is
the memory bandwidth; a long prefill is a few large matmuls, so its ceiling is
the matmul throughput of the dtype it runs in.

* **copy GB/s** -- ``dst.copy_(src)`` of a buffer far larger than the caches,
  counted honestly as bytes read + bytes written (2x the buffer). The cache
  line reads that a write-allocate cache adds before each store are not
  counted: that traffic is the hardware's, not the program's.
* **read GB/s** -- a float32 ``sum`` of the same buffer: reads only, the
  access pattern of a decode step's weight reads.
* **matmul GFLOP/s** -- ``torch.mm`` of square matrices (2 N^3 flops; N grown from 256
  only while a call stays fast, so an emulated dtype does not take minutes) in
  float32, bfloat16 and float16, and ``torch._int_mm`` (int8 x int8 -> int32,
  GOP/s) where torch has a CPU kernel for it; the best of a few repeats.

Everything runs with the thread count torch uses here (the local engine runs
its forwards with torch's setting). The importable part (:func:`measure`,
:func:`engine_shares`, :func:`describe_shares`, and the pieces they use)
lets the engine benchmarks print their achieved GB/s and GFLOP/s as a share
of these limits.

Usage: ``python benchmarks/machine_limits.py [--buffer-mib 512] [--matmul-size 2048]
[--repeat 5] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from promptcache.model.loading import LoadedModel
from promptcache.model.runtime import LlamaRuntime

MATMUL_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEFAULT_BUFFER_MIB = 512
"""Far above any last-level cache (a few hundred MiB would still be safe on
large server parts), small enough for a shared 24 GiB machine."""
DEFAULT_MATMUL_SIZE = 2048


@dataclass(frozen=True, kw_only=True)
class MachineLimits:
    """Measured ceilings: bandwidth in GB/s (1e9 bytes), throughput in GFLOP/s (GOP/s: int8)."""

    copy_gb_s: float
    read_gb_s: float
    matmul_gflop_s: dict[str, float] = field(default_factory=dict)
    threads: int = 1
    load_average_1m: float = 0.0

    @property
    def bandwidth_gb_s(self) -> float:
        """The ceiling for reads: the better of the two measurements."""
        return max(self.copy_gb_s, self.read_gb_s)


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` timed calls, after one untimed warm-up."""
    run()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def memory_bandwidth(buffer_bytes: int, repeat: int) -> tuple[float, float]:
    """(copy GB/s counting read + write, read-only GB/s) over a ``buffer_bytes`` buffer."""
    elements = buffer_bytes // 4
    # fill_ touches every page, so page faults stay out of the timings.
    src = torch.empty(elements, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src).fill_(0.0)
    nbytes = elements * 4
    with torch.inference_mode():
        copy = best_seconds(lambda: dst.copy_(src), repeat)
        read = best_seconds(lambda: src.sum(), repeat)
    return 2 * nbytes / copy / 1e9, nbytes / read / 1e9


_SLOW_CALL_SECONDS = 0.25
"""A dtype whose matmul takes longer than this at some size is not grown further: a
CPU without native bfloat16/float16 maths (AVX2 only) runs them through a slow
fallback, and 2048^3 of that took minutes."""


def grown_size(run_at: Callable[[int], Callable[[], object]], size: int) -> int:
    """The largest size from 256, doubling, up to ``size``, whose one call stays under
    :data:`_SLOW_CALL_SECONDS` (256 at the least)."""
    current = min(256, size)
    while current < size:
        run = run_at(current)
        started = time.perf_counter()
        run()
        if time.perf_counter() - started > _SLOW_CALL_SECONDS / 8:  # 8x the work at 2x
            break
        current = min(2 * current, size)
    return current


def matmul_throughput(dtype: torch.dtype, size: int, repeat: int) -> float:
    """GFLOP/s of one square matmul in ``dtype`` (best of ``repeat``), at ``size`` or at the
    largest size below it that runs in a bounded time (:func:`grown_size`)."""
    generator = torch.Generator().manual_seed(0)

    def run_at(n: int) -> Callable[[], object]:
        a = torch.randn(n, n, generator=generator).to(dtype)
        b = torch.randn(n, n, generator=generator).to(dtype)
        return lambda: torch.mm(a, b)

    with torch.inference_mode():
        n = grown_size(run_at, size)
        seconds = best_seconds(run_at(n), repeat)
    return 2 * n**3 / seconds / 1e9


def int8_matmul_throughput(size: int, repeat: int) -> float | None:
    """GOP/s of ``torch._int_mm`` (int8 in, int32 out), or None where torch has no CPU kernel."""
    int_mm = getattr(torch, "_int_mm", None)
    if int_mm is None:
        return None
    generator = torch.Generator().manual_seed(0)

    def run_at(n: int) -> Callable[[], object]:
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=generator)
        return lambda: int_mm(a, b)

    try:
        with torch.inference_mode():
            n = grown_size(run_at, size)
            seconds = best_seconds(run_at(n), repeat)
    except (RuntimeError, NotImplementedError):
        return None
    return 2 * n**3 / seconds / 1e9


def measure(
    *,
    buffer_bytes: int = DEFAULT_BUFFER_MIB << 20,
    matmul_size: int = DEFAULT_MATMUL_SIZE,
    repeat: int = 5,
) -> MachineLimits:
    """Measure this machine's limits now (a few seconds), with torch's thread count."""
    copy, read = memory_bandwidth(buffer_bytes, repeat)
    flops = {
        name: matmul_throughput(dtype, matmul_size, repeat) for name, dtype in MATMUL_DTYPES.items()
    }
    int8 = int8_matmul_throughput(matmul_size, repeat)
    if int8 is not None:
        flops["int8"] = int8
    return MachineLimits(
        copy_gb_s=copy,
        read_gb_s=read,
        matmul_gflop_s=flops,
        threads=torch.get_num_threads(),
        load_average_1m=os.getloadavg()[0],
    )


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes held by ``tensors`` (None entries -- absent biases -- count nothing)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def decode_bytes_per_token(*, weight_bytes: int, kv_bytes_per_token: int, context: int) -> int:
    """Bytes one decode step must read: every matmul weight once, plus the KV so far."""
    return weight_bytes + kv_bytes_per_token * context


def decode_share(
    limits: MachineLimits, *, bytes_per_token: int, tokens_per_second: float
) -> dict[str, float]:
    """Achieved decode bandwidth (GB/s) and its share of the measured read ceiling."""
    achieved = bytes_per_token * tokens_per_second / 1e9
    return {
        "decode_gb_s": round(achieved, 2),
        "decode_bandwidth_share": round(achieved / limits.bandwidth_gb_s, 3),
    }


def prefill_flops(
    *,
    params: int,
    tokens: int,
    start: int,
    num_layers: int,
    num_heads: int,
    head_dim: int,
) -> float:
    """Flops of prefilling ``tokens`` positions after ``start`` cached ones.

    2 x params x tokens for the matmuls (one multiply-add per weight per token),
    plus attention: per layer and head, QK^T and AV each cost 2 x head_dim flops
    per (query, key) pair, and a causal query at position p sees p + 1 keys.
    """
    pairs = tokens * start + tokens * (tokens + 1) // 2
    return 2.0 * params * tokens + 4.0 * num_layers * num_heads * head_dim * pairs


PEAK_OF_PRECISION = {"int4": "int8"}
"""The measured peak a prompt precision is held against where it is not a torch dtype:
``int4`` prompts multiply 8-bit activations by 4-bit weights widened to bytes, with
the integer dot products ``torch._int_mm`` (int8) runs on."""


def peak_gflop_s(limits: MachineLimits, precision: str) -> float:
    return limits.matmul_gflop_s[PEAK_OF_PRECISION.get(precision, precision)]


def prefill_share(
    limits: MachineLimits, *, flops: float, seconds: float, dtype: str
) -> dict[str, float]:
    """Achieved prefill GFLOP/s and its share of the measured ``dtype`` matmul peak."""
    achieved = flops / seconds / 1e9
    peak = peak_gflop_s(limits, dtype)
    return {
        "prefill_gflop_s": round(achieved, 1),
        f"prefill_share_of_{dtype}_peak": round(achieved / peak, 3),
    }


def layer_matmul_params(tensors: Mapping[str, torch.Tensor]) -> int:
    """Weights of the decoder layers' matmuls (2-D ``model.layers.*`` tensors): what a
    prompt token multiplies by (the output head runs for the last token only)."""
    return sum(
        t.numel()
        for name, t in tensors.items()
        if name.startswith("model.layers.") and t.dim() == 2
    )


def engine_shares(
    limits: MachineLimits,
    runtime: LlamaRuntime,
    loaded: LoadedModel,
    *,
    prefill_tokens: int,
    prefill_seconds: float,
    decode_tok_s: float,
    decode_context: int,
    kv_dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """An engine run's achieved decode GB/s and prefill GFLOP/s as shares of ``limits``.

    Decode bytes per token: the decode weights (``runtime.weight_bytes()``) plus
    ``decode_context`` positions of KV in ``kv_dtype``. Prefill flops: a miss of
    ``prefill_tokens`` from position 0 (:func:`prefill_flops`), against the peak
    of the dtype the runtime's prompt weights run in.
    """
    per_token = decode_bytes_per_token(
        weight_bytes=runtime.weight_bytes("decode"),
        kv_bytes_per_token=runtime.kv_bytes_per_token(kv_dtype),
        context=decode_context,
    )
    flops = prefill_flops(
        params=layer_matmul_params(loaded.weights.tensors),
        tokens=prefill_tokens,
        start=0,
        num_layers=runtime.num_layers,
        num_heads=int(loaded.config.num_attention_heads),
        head_dim=runtime.head_dim,
    )
    dtype = runtime.prefill_precision
    return {
        "decode_bytes_per_token": per_token,
        **decode_share(limits, bytes_per_token=per_token, tokens_per_second=decode_tok_s),
        "prefill_dtype": dtype,
        **prefill_share(limits, flops=flops, seconds=prefill_seconds, dtype=dtype),
        "limits_read_gb_s": round(limits.bandwidth_gb_s, 2),
        f"limits_{dtype}_gflop_s": round(peak_gflop_s(limits, dtype), 1),
    }


def describe_shares(shares: Mapping[str, Any]) -> str:
    """One line: :func:`engine_shares`'s figures."""
    dtype = shares["prefill_dtype"]
    return (
        f"decode {shares['decode_gb_s']:.1f} GB/s = "
        f"{shares['decode_bandwidth_share']:.0%} of {shares['limits_read_gb_s']:.1f} GB/s "
        f"({shares['decode_bytes_per_token'] / 1e6:.0f} MB/token); prefill "
        f"{shares['prefill_gflop_s']:.0f} GFLOP/s = "
        f"{shares[f'prefill_share_of_{dtype}_peak']:.0%} of the "
        f"{PEAK_OF_PRECISION.get(dtype, dtype)} matmul peak "
        f"({shares[f'limits_{dtype}_gflop_s']:.0f} GFLOP/s)"
    )


def precision_shares(
    limits: MachineLimits,
    loaded: LoadedModel,
    *,
    decode_tok_s: Mapping[str, tuple[LlamaRuntime, float]],
    decode_context: int,
    prefill_tok_s: Mapping[str, tuple[LlamaRuntime, float]],
    prompt_tokens: int,
) -> dict[str, Any]:
    """Per precision: decode GB/s (weights + float32 KV at ``decode_context``) and prefill
    GFLOP/s (a ``prompt_tokens`` miss) with their shares of ``limits``.

    ``decode_tok_s`` / ``prefill_tok_s``: precision name -> (its runtime, tokens/s).
    """
    decode: dict[str, Any] = {}
    for name, (runtime, rate) in decode_tok_s.items():
        per_token = decode_bytes_per_token(
            weight_bytes=runtime.weight_bytes("decode"),
            kv_bytes_per_token=runtime.kv_bytes_per_token(),
            context=decode_context,
        )
        decode[name] = decode_share(limits, bytes_per_token=per_token, tokens_per_second=rate)
    prefill: dict[str, Any] = {}
    for name, (runtime, rate) in prefill_tok_s.items():
        flops = prefill_flops(
            params=layer_matmul_params(loaded.weights.tensors),
            tokens=prompt_tokens,
            start=0,
            num_layers=runtime.num_layers,
            num_heads=int(loaded.config.num_attention_heads),
            head_dim=runtime.head_dim,
        )
        dtype = runtime.prefill_precision
        share = prefill_share(limits, flops=flops, seconds=prompt_tokens / rate, dtype=dtype)
        prefill[name] = {
            "prefill_gflop_s": share["prefill_gflop_s"],
            "share_of_peak": share[f"prefill_share_of_{dtype}_peak"],
        }
    return {"limits": asdict(limits), "decode": decode, "prefill": prefill}


def describe_precision_shares(section: Mapping[str, Any]) -> list[str]:
    """Lines for :func:`precision_shares`'s figures."""
    limits = section["limits"]
    read = max(limits["copy_gb_s"], limits["read_gb_s"])
    lines = [
        f"machine limits: read {read:.1f} GB/s, matmul "
        + ", ".join(f"{k} {v:.0f}" for k, v in limits["matmul_gflop_s"].items())
        + " GFLOP/s"
    ]
    lines += [
        f"  decode {name}: {d['decode_gb_s']:.1f} GB/s = {d['decode_bandwidth_share']:.0%} "
        "of the read bandwidth (weights + KV)"
        for name, d in section["decode"].items()
    ]
    lines += [
        f"  prefill {name}: {p['prefill_gflop_s']:.0f} GFLOP/s = {p['share_of_peak']:.0%} "
        f"of the {PEAK_OF_PRECISION.get(name, name)} matmul peak"
        for name, p in section["prefill"].items()
    ]
    return lines


def describe(limits: MachineLimits) -> str:
    """One line for an engine benchmark's output."""
    flops = ", ".join(f"{name} {value:.0f}" for name, value in limits.matmul_gflop_s.items())
    return (
        f"machine limits ({limits.threads} threads): copy {limits.copy_gb_s:.1f} GB/s, "
        f"read {limits.read_gb_s:.1f} GB/s; matmul GFLOP/s {flops}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffer-mib", type=int, default=DEFAULT_BUFFER_MIB)
    parser.add_argument("--matmul-size", type=int, default=DEFAULT_MATMUL_SIZE)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.buffer_mib < 16 or args.matmul_size < 64 or args.repeat < 1:
        parser.error("need --buffer-mib >= 16, --matmul-size >= 64, --repeat >= 1")
    limits = measure(
        buffer_bytes=args.buffer_mib << 20, matmul_size=args.matmul_size, repeat=args.repeat
    )
    report = {
        **asdict(limits),
        "buffer_mib": args.buffer_mib,
        "matmul_size": args.matmul_size,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{limits.threads} torch threads, {report['cpu_capability']}, {os.cpu_count()} CPUs")
    print(f"{'memory copy (read + write)':32}{limits.copy_gb_s:>10.1f} GB/s")
    print(f"{'memory read (float32 sum)':32}{limits.read_gb_s:>10.1f} GB/s")
    for name, value in limits.matmul_gflop_s.items():
        unit = "GOP/s" if name == "int8" else "GFLOP/s"
        label = f"matmul {name} (<= {args.matmul_size}^2)"
        print(f"{label:32}{value:>10.0f} {unit}")
    for name in ("bfloat16", "float16", "int8"):
        if name in limits.matmul_gflop_s:
            ratio = limits.matmul_gflop_s[name] / limits.matmul_gflop_s["float32"]
            print(f"{name} over float32: {ratio:.2f}x")
    print(f"load average {limits.load_average_1m:.2f} (during the run)")


if __name__ == "__main__":
    main()
