"""Response-cache hits over HTTP, and time to first token with a cached prefix, one run.

Starts ``promptcache serve`` (embedded model, ``--store``, default
``memory://``) as a child process on a free 127.0.0.1 port; this process is
the load generator, speaking raw HTTP/1.1 over keep-alive sockets so the
client's own overhead stays small next to the server's.

1. **Hits.** One request is computed and stored, then the identical request
   is replayed: latency p50/p99 from one connection, one request at a time;
   then requests/s from ``--connections`` concurrent connections. Bounded by
   ``--requests`` and ``--seconds``. Targets: p50 <= 2 ms, >= 1,000 req/s.
2. **TTFT over HTTP** for a ~2,000-token system prompt: uncached (a prefix the
   KV cache has never seen) against cached (same prefix, new question), as
   streamed Chat Completions; interleaved, medians over ``--repeats``.

    python benchmarks/http_hits.py [--json] [--store sqlite:///tmp/bench.db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

MODEL = "SmolLM2-135M-Instruct"
TARGET_P50_MS = 2.0
TARGET_RPS = 1000.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(port: int, store: str) -> Iterator[str]:
    """``promptcache serve`` on ``port`` with ``store``; its KV disk tier in a fresh
    temporary directory (the default ``.promptcache/kv`` may hold an earlier run's
    prompts, which would turn this run's misses into disk hits)."""
    with tempfile.TemporaryDirectory(prefix="http-hits-kv-") as kv_dir:
        command = [
            sys.executable,
            "-c",
            "from promptcache.cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--store",
            store,
            "--max-queue",
            "64",
            "--kv-disk-path",
            kv_dir,
        ]
        base = f"http://127.0.0.1:{port}"
        with running_process(command, f"{base}/healthz", start_timeout=600):
            yield base


@contextmanager
def running_process(
    command: list[str], ready_url: str, *, start_timeout: float = 120.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` started, once ``ready_url`` answers 200; terminated (then killed) after."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"{command[3:5]} exited: {error[-2000:]}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} did not come up within {start_timeout:g} s")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _raw_request(port: int, body: bytes) -> bytes:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _read_response(sock_file: Any) -> tuple[bytes, bytes]:
    """(status line + headers, body) of one Content-Length response."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = sock_file.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        head += line
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, sock_file.read(length)


def measure_latency(port: int, request: bytes, count: int, seconds: float) -> list[float]:
    """Sequential hits on one keep-alive connection; seconds per request."""
    samples: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock_file = sock.makefile("rb")
        deadline = time.monotonic() + seconds
        while len(samples) < count and time.monotonic() < deadline:
            start = time.perf_counter()
            sock.sendall(request)
            head, _ = _read_response(sock_file)
            samples.append(time.perf_counter() - start)
            if b"x-promptcache: HIT" not in head:
                raise RuntimeError(f"expected a HIT, got:\n{head.decode()}")
    return samples


async def _connection_loop(port: int, request: bytes, stop_at: float, budget: list[int]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while budget[0] > 0 and time.monotonic() < stop_at:
            budget[0] -= 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            done += 1
    finally:
        writer.close()
    return done


async def _throughput(
    port: int, request: bytes, connections: int, count: int, seconds: float
) -> tuple[int, float]:
    budget = [count]
    start = time.perf_counter()
    stop_at = time.monotonic() + seconds
    done = await asyncio.gather(
        *(_connection_loop(port, request, stop_at, budget) for _ in range(connections))
    )
    return sum(done), time.perf_counter() - start


def long_system_prompt(topic: str, tokens: int = 2000) -> str:
    # ~2.75 tokens per word with this tokenizer on these numeric lines.
    words = int(tokens / 2.75)
    lines = [f"You keep the ledger of the {topic} guild."]
    i = 0
    while sum(len(line.split()) for line in lines) < words:
        lines.append(f"Entry {i} of {topic}: item {i * 13 + 5} moved to shelf {i % 17}.")
        i += 1
    return "\n".join(lines)


def ttft(base: str, system: str, question: str) -> tuple[float, int]:
    """Seconds to the first content delta of a streamed request, and its cached tokens."""
    body = {
        "model": MODEL,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ],
    }
    first: float | None = None
    cached = 0
    start = time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                cached = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
    if first is None:
        raise RuntimeError("the stream produced no content")
    return first, cached


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    with running_server(port, args.store) as base:
        body = json.dumps(
            {
                "model": MODEL,
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "What is a prompt cache?"}],
            }
        ).encode()
        warm = httpx.post(
            f"{base}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
            timeout=600,
        )
        warm.raise_for_status()
        request = _raw_request(port, body)
        measure_latency(port, request, 200, 10)  # warm-up: connections, code paths
        samples = measure_latency(port, request, args.requests, args.seconds)
        done, elapsed = asyncio.run(
            _throughput(port, request, args.connections, args.requests, args.seconds)
        )
        samples_ms = sorted(s * 1000 for s in samples)
        p50 = statistics.median(samples_ms)
        p99 = samples_ms[min(len(samples_ms) - 1, int(len(samples_ms) * 0.99))]
        rps = done / elapsed

        uncached: list[float] = []
        cached: list[float] = []
        cached_tokens: list[int] = []
        for i in range(args.repeats):
            system = long_system_prompt(f"bench-{os.getpid()}-{i}")
            seconds, _ = ttft(base, system, "What is entry 1?")
            uncached.append(seconds)
            seconds, tokens = ttft(base, system, "What is entry 2?")
            cached.append(seconds)
            cached_tokens.append(tokens)
    figures: dict[str, Any] = {
        "store": args.store,
        "hit_requests_sequential": len(samples),
        "hit_p50_ms": round(p50, 3),
        "hit_p99_ms": round(p99, 3),
        "hit_requests_concurrent": done,
        "hit_connections": args.connections,
        "hit_rps": round(rps, 1),
        "target_p50_ms": TARGET_P50_MS,
        "target_rps": TARGET_RPS,
        "p50_target_met": p50 <= TARGET_P50_MS,
        "rps_target_met": rps >= TARGET_RPS,
        "ttft_repeats": args.repeats,
    }
    if args.repeats:
        ttft_uncached = statistics.median(uncached)
        ttft_cached = statistics.median(cached)
        figures["ttft_uncached_s"] = round(ttft_uncached, 4)
        figures["ttft_cached_s"] = round(ttft_cached, 4)
        figures["ttft_uncached_over_cached"] = round(ttft_uncached / ttft_cached, 2)
        figures["ttft_cached_prompt_tokens"] = statistics.median(cached_tokens)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="memory://", help="response-cache store URL")
    parser.add_argument("--requests", type=int, default=5000, help="max requests per phase")
    parser.add_argument("--seconds", type=float, default=15.0, help="max seconds per phase")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument("--repeats", type=int, default=3, help="TTFT pairs (0: skip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"response-cache hits over HTTP ({figures['store']})")
    print(
        f"  latency  p50 {figures['hit_p50_ms']:.3f} ms   p99 {figures['hit_p99_ms']:.3f} ms"
        f"   (target p50 <= {TARGET_P50_MS} ms: "
        f"{'met' if figures['p50_target_met'] else 'NOT met'})"
    )
    print(
        f"  throughput {figures['hit_rps']:.0f} req/s over {figures['hit_connections']} "
        f"connections   (target >= {TARGET_RPS:.0f}: "
        f"{'met' if figures['rps_target_met'] else 'NOT met'})"
    )
    if not args.repeats:
        return
    print("time to first token over HTTP, ~2,000-token system prompt")
    print(
        f"  uncached {figures['ttft_uncached_s']:.3f} s   cached {figures['ttft_cached_s']:.3f} s"
        f"   ratio {figures['ttft_uncached_over_cached']:.1f}x"
        f"   ({figures['ttft_cached_prompt_tokens']} prompt tokens read from the KV cache)"
    )


if __name__ == "__main__":
    main()
