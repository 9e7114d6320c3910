"""Latency promptcache adds on a response-cache MISS in front of an upstream, one run.

Starts a fake OpenAI-compatible provider that answers every chat completion after a
fixed delay (default 20 ms; a separate process, uvicorn on loopback), and
``promptcache serve --upstream-url`` in front of it (another process, memory store).
Then, one request at a time on one keep-alive connection each, alternates a call to
the fake directly with the same call through promptcache (every message distinct, so
every gateway call is a MISS: parse, key, lookup, upstream call, store write, render).
The added latency is the gateway's percentile minus the direct one. On a loaded
machine wall time stretches every CPU millisecond, so the run also reports the CPU
time the gateway process spent per request (``/proc``), which load does not inflate.
Target: <= 1 ms added at p50.

    python benchmarks/proxy_overhead.py [--requests 300] [--delay-ms 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from typing import Any

from http_hits import _free_port, _raw_request, _read_response, running_process

TARGET_ADDED_P50_MS = 1.0
MODEL = "fake-model"


def _fake_provider(port: int, delay: float) -> None:
    """The fake upstream: a bare ASGI app, so its own cost is the same on both paths."""
    import asyncio

    import uvicorn

    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
    }
    stream_text = "".join(
        "data: " + json.dumps({**chunk, "choices": [choice]}) + "\n\n"
        for choice in (
            {"index": 0, "delta": {"role": "assistant", "content": "Hello there."}},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        )
    )
    stream_text += "data: " + json.dumps(
        {**chunk, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
    )
    stream_body = (stream_text + "\n\ndata: [DONE]\n\n").encode()
    message = {"role": "assistant", "content": "Hello there."}
    json_body = json.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
    ).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        content: bytes = b"{}"  # GET: the readiness probe
        media = b"application/json"
        if scope["method"] == "POST":
            await asyncio.sleep(delay)
            streamed = json.loads(body).get("stream")
            content = stream_body if streamed else json_body
            media = b"text/event-stream" if streamed else b"application/json"
        headers = [(b"content-type", media), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _request(port: int, index: int) -> bytes:
    body = json.dumps(
        {
            "model": MODEL,
            "max_tokens": 16,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": f"Question number {index}: say hello."},
            ],
        }
    ).encode()
    return _raw_request(port, body)


class _Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def call(self, index: int) -> tuple[float, bytes]:
        request = _request(self.port, index)
        start = time.perf_counter()
        self.sock.sendall(request)
        head, _ = _read_response(self.file)
        return time.perf_counter() - start, head

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    fake_port, gateway_port = _free_port(), _free_port()
    fake = [sys.executable, __file__, "--fake-provider", str(fake_port)]
    fake += ["--delay-ms", str(args.delay_ms)]
    gateway = [sys.executable, "-c", "from promptcache.cli import main; main()", "serve"]
    gateway += ["--port", str(gateway_port), "--store", "memory://"]
    gateway += ["--upstream-url", f"http://127.0.0.1:{fake_port}/v1"]
    load_before = os.getloadavg()
    with (
        running_process(fake, f"http://127.0.0.1:{fake_port}/"),
        running_process(gateway, f"http://127.0.0.1:{gateway_port}/healthz") as gateway_process,
    ):
        direct, through = _Connection(fake_port), _Connection(gateway_port)
        try:
            for index in range(args.warmup):  # connections, code paths, the pool to the fake
                direct.call(-1 - index)
                through.call(-1 - index)
            direct_s: list[float] = []
            gateway_s: list[float] = []
            cpu_before = _cpu_seconds(gateway_process.pid)
            deadline = time.monotonic() + args.seconds
            for index in range(args.requests):
                if time.monotonic() > deadline:
                    break
                seconds, _ = direct.call(index)
                direct_s.append(seconds)
                seconds, head = through.call(index)
                if b"x-promptcache: MISS" not in head:
                    raise RuntimeError(f"expected a MISS, got:\n{head.decode()}")
                gateway_s.append(seconds)
            cpu = _cpu_seconds(gateway_process.pid) - cpu_before
        finally:
            direct.close()
            through.close()
    ms = 1000.0
    direct_p50, direct_p99 = _percentile(direct_s, 0.5) * ms, _percentile(direct_s, 0.99) * ms
    gate_p50, gate_p99 = _percentile(gateway_s, 0.5) * ms, _percentile(gateway_s, 0.99) * ms
    return {
        "requests": len(gateway_s),
        "upstream_delay_ms": args.delay_ms,
        "direct_p50_ms": round(direct_p50, 3),
        "direct_p99_ms": round(direct_p99, 3),
        "gateway_p50_ms": round(gate_p50, 3),
        "gateway_p99_ms": round(gate_p99, 3),
        "added_p50_ms": round(gate_p50 - direct_p50, 3),
        "added_p99_ms": round(gate_p99 - direct_p99, 3),
        "added_mean_ms": round((statistics.fmean(gateway_s) - statistics.fmean(direct_s)) * ms, 3),
        "gateway_cpu_ms_per_request": round(cpu * ms / len(gateway_s), 3),
        "target_added_p50_ms": TARGET_ADDED_P50_MS,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=120.0, help="stop measuring after this")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--fake-provider", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_provider:
        _fake_provider(args.fake_provider, args.delay_ms / 1000.0)
        return
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{figures['requests']} MISSes through promptcache against the fake directly "
        f"({figures['upstream_delay_ms']:g} ms upstream delay):"
    )
    print(f"  direct  p50 {figures['direct_p50_ms']:.3f} ms  p99 {figures['direct_p99_ms']:.3f} ms")
    print(
        f"  gateway p50 {figures['gateway_p50_ms']:.3f} ms  p99 {figures['gateway_p99_ms']:.3f} ms"
    )
    verdict = "meets" if figures["added_p50_ms"] <= TARGET_ADDED_P50_MS else "misses"
    print(
        f"  added   p50 {figures['added_p50_ms']:.3f} ms  p99 {figures['added_p99_ms']:.3f} ms "
        f"({verdict} the {TARGET_ADDED_P50_MS:g} ms p50 target)"
    )
    print(f"  gateway CPU per request {figures['gateway_cpu_ms_per_request']:.3f} ms")
    print(f"  load average {figures['loadavg_before']} -> {figures['loadavg_after']}")


if __name__ == "__main__":
    main()
