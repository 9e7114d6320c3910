"""Prefix affinity against round-robin over three local-engine replicas, in one run.

Three ``promptcache serve`` replicas on the embedded model (127.0.0.1, no
response cache, small ``--min-cache-tokens``) answer 12 distinct long
prefixes x 4 questions each (``--prefixes``, ``--questions``), sent in one
seeded shuffled order (independent users) with ``--concurrency`` requests in
flight, twice:

* **round-robin**: the client rotates over the replicas itself (a plain load
  balancer; one hop fewer than the gateway, so the comparison favours it);
* **affinity**: through a ``promptcache serve`` gateway given the three URLs
  (``--upstream-url`` x3): consistent hashing with bounded loads over each
  request's first prefix blocks.

The replicas' KV caches are cleared between the two (``DELETE /v1/cache``).
Each replica's KV budget holds ``--kv-prefixes`` prefixes (default 6: half the
working set, so the fleet's caches together hold every prefix but one
replica's do not -- the regime that makes a team add replicas); 0 leaves the
default budget, which holds them all. Reported per mode: the share of prompt
tokens served from the replicas' caches (``usage.prompt_tokens_details.
cached_tokens``) and the total wall time; then ``cached_share_ratio``
(affinity over round-robin) and ``speedup`` (round-robin time over affinity
time), with the machine's load average. ``--json`` prints one object.
Targets: cached share ratio >= 3, speedup >= 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

MODEL = "SmolLM2-135M-Instruct"
TARGETS = {"cached_share_ratio": 3.0, "speedup": 2.0}
PROMPTCACHE = str(Path(sys.executable).parent / "promptcache")
TOPICS = [
    "valves", "pumps", "boilers", "turbines", "filters", "sensors",
    "cables", "bearings", "gears", "relays", "nozzles", "compressors",
]  # fmt: skip


@dataclass
class ModeFigures:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0
    requests: int = 0

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _document(index: int, tokens: int) -> str:
    """A distinct manual of about ``tokens`` tokens (~4 characters a token)."""
    topic = TOPICS[index % len(TOPICS)]
    lines: list[str] = []
    i = 0
    while sum(len(line) for line in lines) < tokens * 4:
        lines.append(
            f"Manual {index}, {topic} rule {i}: inspect unit {i * 7 + index} every "
            f"{i % 5 + 2} days and log a reading between {i + index} and {i + index + 9}."
        )
        i += 1
    return " ".join(lines)


def _serve(port: int, cwd: Path, *options: str) -> subprocess.Popen[bytes]:
    """``promptcache serve`` in its own directory (its ``./.promptcache`` its own)."""
    cwd.mkdir()
    command = [
        PROMPTCACHE, "serve", "--host", "127.0.0.1", "--port", str(port),
        "--store", "none", *options,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ready(process: subprocess.Popen[bytes], port: int, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise SystemExit(f"promptcache serve on {port} exited: {error[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"promptcache serve on {port} was not ready in {seconds:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _kv_bytes_per_token() -> int:
    """The local engine's float32 KV bytes per token for the embedded model."""
    from promptcache.model.loading import load_model

    config = load_model().config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return 2 * int(config.num_hidden_layers) * kv_heads * head_dim * 4


async def _run_mode(
    bases: Sequence[str], work: list[tuple[int, int]], documents: list[str], concurrency: int
) -> ModeFigures:
    """Sends ``work`` in order, ``concurrency`` at a time; request k goes to bases[k % n]."""
    figures = ModeFigures()
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for k, (p, q) in enumerate(work):
        queue.put_nowait((k, p, q))

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            k, p, q = queue.get_nowait()
            body = {
                "model": MODEL,
                "max_tokens": 8,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": documents[p]},
                    {"role": "user", "content": f"Question {q}: which unit comes first?"},
                ],
            }
            response = await client.post(
                f"{bases[k % len(bases)]}/v1/chat/completions", json=body, timeout=900
            )
            response.raise_for_status()
            usage = response.json()["usage"]
            figures.prompt_tokens += usage["prompt_tokens"]
            figures.cached_tokens += (usage.get("prompt_tokens_details") or {}).get(
                "cached_tokens", 0
            )
            figures.requests += 1

    started = time.perf_counter()
    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    figures.seconds = time.perf_counter() - started
    return figures


def _clear(replica_bases: Sequence[str]) -> None:
    for base in replica_bases:
        httpx.delete(f"{base}/v1/cache", timeout=60).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--prefixes", type=int, default=12)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--prefix-tokens", type=int, default=600)
    parser.add_argument("--kv-prefixes", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--load-factor", type=float, default=1.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    documents = [_document(p, args.prefix_tokens) for p in range(args.prefixes)]
    work = [(p, q) for p in range(args.prefixes) for q in range(args.questions)]
    random.Random(args.seed).shuffle(work)
    # RAM only: a disk tier would hand evicted prefixes back and blur the KV budget.
    replica_options = ["--min-cache-tokens", "32", "--engine-workers", "1", "--kv-disk-bytes", "0"]
    kv_bytes = 0
    if args.kv_prefixes > 0:
        # A block more per prefix for the rendered chat template around the document.
        kv_bytes = int(_kv_bytes_per_token() * (args.prefix_tokens + 64) * args.kv_prefixes)
        replica_options += ["--kv-cache-bytes", str(kv_bytes)]
    load_before = os.getloadavg()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replica-affinity-")))
        ports = [_free_port() for _ in range(3)]
        replicas = [_serve(port, root / str(port), *replica_options) for port in ports]
        for process in replicas:
            stack.callback(_stop, process)
        for process, port in zip(replicas, ports, strict=True):
            _wait_ready(process, port)
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        gateway_port = _free_port()
        urls = [arg for base in bases for arg in ("--upstream-url", f"{base}/v1")]
        gateway = _serve(
            gateway_port, root / "gateway", *urls, "--upstream-model", MODEL,
            "--replica-load-factor", str(args.load_factor),
        )  # fmt: skip
        stack.callback(_stop, gateway)
        _wait_ready(gateway, gateway_port)
        # Warm every replica (first-request allocations), then start both modes cold.
        asyncio.run(_run_mode(bases, [(0, 0)] * 3, ["warm up " * 8], 1))
        _clear(bases)
        round_robin = asyncio.run(_run_mode(bases, work, documents, args.concurrency))
        _clear(bases)
        gateway_base = f"http://127.0.0.1:{gateway_port}"
        affinity = asyncio.run(_run_mode([gateway_base], work, documents, args.concurrency))
        fleet = httpx.get(f"{gateway_base}/v1/cache/stats", timeout=30).json()["engine"]
    load_after = os.getloadavg()
    report: dict[str, Any] = {
        # None when round-robin read nothing from cache (the ratio is unbounded).
        "cached_share_ratio": (
            round(affinity.cached_share / round_robin.cached_share, 3)
            if round_robin.cached_share
            else None
        ),
        "speedup": round(round_robin.seconds / affinity.seconds, 3),
        "affinity": {**asdict(affinity), "cached_share": round(affinity.cached_share, 4)},
        "round_robin": {**asdict(round_robin), "cached_share": round(round_robin.cached_share, 4)},
        "affinity_replicas": {
            row["replica"]: row["requests"] for row in fleet["replicas"]["replicas"]
        },
        "moved_for_load": fleet["replicas"]["moved_for_load"],
        "config": {
            "prefixes": args.prefixes,
            "questions": args.questions,
            "prefix_tokens": args.prefix_tokens,
            "kv_prefixes_per_replica": args.kv_prefixes,
            "kv_cache_bytes_per_replica": kv_bytes or "default",
            "concurrency": args.concurrency,
            "load_factor": args.load_factor,
            "seed": args.seed,
        },
        "load_average": {"before": load_before, "after": load_after, "cpus": os.cpu_count()},
        "targets": TARGETS,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{'mode':<12} {'requests':>8} {'prompt tok':>10} {'cached tok':>10} "
          f"{'cached %':>8} {'seconds':>8}")  # fmt: skip
    for name, row in (("round-robin", round_robin), ("affinity", affinity)):
        print(
            f"{name:<12} {row.requests:>8} {row.prompt_tokens:>10} {row.cached_tokens:>10} "
            f"{row.cached_share:>8.1%} {row.seconds:>8.1f}"
        )
    for key, target in TARGETS.items():
        value = report[key]
        shown = "unbounded (round-robin cached nothing)" if value is None else f"{value:.2f}"
        verdict = "ok" if value is None or value >= target else "BELOW TARGET"
        print(f"{key}: {shown} (target >= {target}) {verdict}")
    print(f"affinity per replica: {report['affinity_replicas']}, "
          f"moved by the load bound: {report['moved_for_load']}")  # fmt: skip
    print(f"load average before {load_before}, after {load_after} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
