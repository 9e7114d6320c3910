"""The response-cache hit path with Anthropic cache diagnostics on and off, one run.

Starts ``promptcache serve`` (embedded model) like ``http_hits.py``, computes one
Messages request, then replays it as a HIT from one keep-alive connection, one
request at a time, alternating batches of the plain body and of the same body with
``diagnostics: {"previous_message_id": <the first answer's id>}`` (same cache key:
diagnostics are transport). The plain hit never runs the prefix-miss diagnosis (that
lives in the engine, which a HIT does not reach); a diagnosed hit fingerprints its
prompt, compares it and records it. Target: diagnosed p50 <= 1.05 x plain p50.

    python benchmarks/diagnostics_hits.py [--requests 4000] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
from typing import Any

import httpx

from http_hits import (
    MODEL,
    _free_port,
    _read_response,
    long_system_prompt,
    running_server,
)

TARGET_OVERHEAD = 0.05


def _raw(port: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        "POST /v1/messages HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _batch(sock: socket.socket, sock_file: Any, request: bytes, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        sock.sendall(request)
        head, _ = _read_response(sock_file)
        samples.append(time.perf_counter() - start)
        if b"x-promptcache: HIT" not in head:
            raise RuntimeError(f"expected a HIT, got:\n{head.decode()}")
    return samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 8,
        "system": long_system_prompt("diagnostics", 1500),
        "messages": [{"role": "user", "content": "Which shelf holds item 18?"}],
    }
    with running_server(port, "memory://") as base:
        opening = {**body, "diagnostics": {"previous_message_id": None}}  # recorded
        first = httpx.post(f"{base}/v1/messages", json=opening, timeout=600).json()
        diagnosed = {**body, "diagnostics": {"previous_message_id": first["id"]}}
        check = httpx.post(f"{base}/v1/messages", json=diagnosed, timeout=60).json()
        assert check["diagnostics"] == {"cache_miss_reason": None}, check
        plain_req, diag_req = _raw(port, body), _raw(port, diagnosed)
        plain: list[float] = []
        diag: list[float] = []
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock_file = sock.makefile("rb")
            _batch(sock, sock_file, plain_req, 200)  # warm up both paths
            _batch(sock, sock_file, diag_req, 200)
            batch = 100
            while len(plain) < args.requests:
                plain += _batch(sock, sock_file, plain_req, batch)
                diag += _batch(sock, sock_file, diag_req, batch)
    p50_off = statistics.median(plain) * 1000
    p50_on = statistics.median(diag) * 1000
    overhead = p50_on / p50_off - 1
    return {
        "requests_each": len(plain),
        "hit_p50_ms_diagnostics_off": round(p50_off, 3),
        "hit_p50_ms_diagnostics_on": round(p50_on, 3),
        "overhead_at_p50": round(overhead, 4),
        "target_overhead": TARGET_OVERHEAD,
        "ok": overhead <= TARGET_OVERHEAD,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
