"""The KV prefix cache's tiers across a restart: disk-tier hits, RAM-tier hits, recomputing.

One run on the embedded SmolLM2 (as ``promptcache serve`` runs it), per KV dtype
(``--dtypes``, default float32, float16 and bfloat16), each in its own disk-tier
directory:

1. a *fill* process serves ``--prefixes`` requests, each with its own
   ~2,000-token system prompt (the prefix cache writes their blocks through
   to the disk tier), and exits;
2. a fresh *measure* process -- the restart -- serves, for each prefix, a new
   question on it: the first time to first token is a **disk-tier hit** (the
   RAM tier is empty after the restart), the same request again a **RAM-tier
   hit**, and the same request under another tenant a **recompute** (no cached
   block can match another tenant's chain). The greedy texts of the disk-tier
   hit and the recompute must be identical (the cache's guarantee).

Tokens cached per GiB of RAM per dtype are measured, not computed: the RAM
tier's bytes held over the tokens it holds after the run. Ratios use the
fastest sample of each kind (the run least disturbed by the neighbours on a
shared machine); medians are printed next to them.

``--json`` prints one object with ``restart_speedup`` (recompute over disk-tier
TTFT, float32 or the first dtype run), ``ram_over_disk`` (disk-tier TTFT over
RAM-tier TTFT: how many times faster a RAM hit is than a disk hit) and
``tokens_per_gib_ratio`` (the best 16-bit dtype's tokens per GiB over
float32's), next to the per-dtype figures.

Usage: ``python benchmarks/kv_tiers.py [--prefixes 2] [--dtypes float32,bfloat16] [--json]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from prefix_cache_ttft import question, request, shared_system, ttft
from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.prefix.cache import PrefixCacheConfig

NEW_TOKENS = 12
TARGET_RESTART_SPEEDUP = 10.0
TARGET_TOKENS_PER_GIB_RATIO = 2.0


def engine_on(directory: str, kv_dtype: str) -> LocalEngine:
    prefix = PrefixCacheConfig(disk_path=directory, kv_dtype=kv_dtype)
    return LocalEngine.from_config(LocalEngineConfig(prefix_cache=prefix))


def precisions(engine: LocalEngine) -> str:
    """What the engine's prompt and decode forwards multiply by (``auto`` resolved)."""
    runtime = engine.runtime
    return f"prefill {runtime.prefill_precision}, decode {runtime.decode_precision}"


def fill(directory: str, kv_dtype: str, prefixes: int) -> dict[str, Any]:
    engine = engine_on(directory, kv_dtype)
    for i in range(prefixes):
        ttft(engine, request(shared_system(engine, f"doc {i}"), question(0), 1))
    engine.close()  # the writer finishes its queue: every block is on disk
    disk = engine.prefix_stats().tiers[-1]
    return {
        "disk_blocks": disk.blocks,
        "disk_bytes": disk.bytes_used,
        "fill_precisions": precisions(engine),
    }


def measure(directory: str, kv_dtype: str, prefixes: int) -> dict[str, Any]:
    started = time.perf_counter()
    engine = engine_on(directory, kv_dtype)
    start_s = time.perf_counter() - started
    on_start = engine.prefix_stats().tiers
    disk_s, ram_s, recompute_s = [], [], []
    faithful = disk_equals_ram = 0
    for i in range(prefixes):
        chat = request(shared_system(engine, f"doc {i}"), question(i + 1), NEW_TOKENS)
        seconds, from_disk = ttft(engine, chat)  # the first request on this prefix
        assert from_disk.usage.cache_read_input_tokens > 0, "the disk tier did not hit"
        disk_s.append(seconds)
        seconds, from_ram = ttft(engine, chat)
        ram_s.append(seconds)
        seconds, recomputed = ttft(engine, dataclasses.replace(chat, tenant=f"other {i}"))
        assert recomputed.usage.cache_read_input_tokens == 0
        recompute_s.append(seconds)
        # A disk-tier hit must decode what a miss decodes; and what a RAM-tier hit does
        # (if only the miss differs, the hit/miss difference is not the disk tier's).
        faithful += from_disk.choices[0].text == recomputed.choices[0].text
        disk_equals_ram += from_disk.choices[0].text == from_ram.choices[0].text
    ram, disk = engine.prefix_stats().tiers
    engine.close()
    return {
        "engine_start_s": round(start_s, 3),
        "precisions": precisions(engine),
        "disk_blocks_on_start": on_start[-1].blocks,
        "ram_blocks_on_start": on_start[0].blocks,
        "prefix_tokens": from_disk.usage.cache_read_input_tokens,
        "disk_ttft_s": disk_s,
        "ram_ttft_s": ram_s,
        "recompute_ttft_s": recompute_s,
        "faithful": f"{faithful}/{prefixes}",
        "disk_hit_equals_ram_hit": f"{disk_equals_ram}/{prefixes}",
        "ram_bytes_per_token": ram.bytes_used / (ram.blocks * 16),
        "disk_read_bytes_per_s": disk.read_bytes_per_second,
        "disk_corrupt_blocks": disk.corrupt_blocks,
    }


def child(phase: str, directory: str, kv_dtype: str, prefixes: int) -> dict[str, Any]:
    """Run a phase in a fresh process (a real restart), its JSON figures back."""
    done = subprocess.run(
        [
            *(sys.executable, __file__, "--phase", phase, "--dir", directory),
            *("--dtypes", kv_dtype, "--prefixes", str(prefixes)),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {phase} process failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def run(dtypes: list[str], prefixes: int, log: Any) -> dict[str, Any]:
    per_dtype: dict[str, Any] = {}
    for kv_dtype in dtypes:
        with tempfile.TemporaryDirectory(prefix="kv-tiers-") as directory:
            log(f"{kv_dtype}: filling the disk tier ({prefixes} prefixes)")
            filled = child("fill", directory, kv_dtype, prefixes)
            log(f"{kv_dtype}: restarted, measuring")
            figures = child("measure", directory, kv_dtype, prefixes)
        disk, ram, recompute = (
            min(figures[k]) for k in ("disk_ttft_s", "ram_ttft_s", "recompute_ttft_s")
        )
        per_dtype[kv_dtype] = {
            **filled,
            **figures,
            "disk_ttft_median_s": statistics.median(figures["disk_ttft_s"]),
            "ram_ttft_median_s": statistics.median(figures["ram_ttft_s"]),
            "recompute_ttft_median_s": statistics.median(figures["recompute_ttft_s"]),
            "restart_speedup": round(recompute / disk, 2),
            "ram_over_disk": round(disk / ram, 2),
            "tokens_per_gib": int(2**30 / figures["ram_bytes_per_token"]),
        }
    main = per_dtype.get("float32") or per_dtype[dtypes[0]]
    half = [per_dtype[d]["tokens_per_gib"] for d in ("float16", "bfloat16") if d in per_dtype]
    ratio = (
        round(max(half) / per_dtype["float32"]["tokens_per_gib"], 2)
        if (half and "float32" in per_dtype)
        else None
    )
    return {
        "restart_speedup": main["restart_speedup"],
        "ram_over_disk": main["ram_over_disk"],
        "tokens_per_gib_ratio": ratio,
        "faithful": all(
            f["faithful"].split("/")[0] == f["faithful"].split("/")[1] for f in per_dtype.values()
        ),
        "targets": {
            "restart_speedup": f">= {TARGET_RESTART_SPEEDUP}",
            "tokens_per_gib_ratio": f">= {TARGET_TOKENS_PER_GIB_RATIO}",
        },
        "dtypes": per_dtype,
    }


def print_table(report: dict[str, Any]) -> None:
    print("KV tiers across a restart (embedded SmolLM2, fastest sample; median in brackets)")
    for kv_dtype, f in report["dtypes"].items():
        print(
            f"  {kv_dtype:>8}: {f['prefix_tokens']} cached tokens; TTFT disk-tier hit "
            f"{min(f['disk_ttft_s']) * 1e3:.0f} ms [{f['disk_ttft_median_s'] * 1e3:.0f}], "
            f"RAM-tier hit {min(f['ram_ttft_s']) * 1e3:.0f} ms "
            f"[{f['ram_ttft_median_s'] * 1e3:.0f}], recompute {min(f['recompute_ttft_s']):.2f} s "
            f"[{f['recompute_ttft_median_s']:.2f}]"
        )
        print(
            f"            restart speedup {f['restart_speedup']}x, RAM over disk "
            f"{f['ram_over_disk']}x, {f['tokens_per_gib']:,} tokens/GiB, faithful "
            f"{f['faithful']}, disk reads {f['disk_read_bytes_per_s'] / 2**20:.0f} MiB/s, "
            f"engine start {f['engine_start_s']} s ({f['disk_blocks_on_start']} blocks indexed)"
        )
    print(
        f"restart_speedup {report['restart_speedup']} (target >= {TARGET_RESTART_SPEEDUP}), "
        f"ram_over_disk {report['ram_over_disk']}, tokens_per_gib_ratio "
        f"{report['tokens_per_gib_ratio']} (target >= {TARGET_TOKENS_PER_GIB_RATIO}), "
        f"faithful: {report['faithful']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefixes", type=int, default=2, help="prefixes (samples) per dtype")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--phase", choices=("fill", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if args.prefixes < 1 or not dtypes:
        parser.error("--prefixes must be at least 1 and --dtypes name at least one dtype")
    if args.phase is not None:
        phase = fill if args.phase == "fill" else measure
        print(json.dumps(phase(args.dir, dtypes[0], args.prefixes)))
        return

    def log(step: str) -> None:
        if not args.json:
            print(f"... {step}", file=sys.stderr, flush=True)

    report = run(dtypes, args.prefixes, log)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
