"""Cross-process coalescing on Redis, side by side with in-process coalescing only.

Several response caches on one Redis, each with its own in-process flight table
(what separate ``promptcache serve`` processes have; here in one event loop so
the run is cheap and repeatable), measured with Redis's flight locks on and off:

* burst: ``--gateways`` x ``--requests`` concurrent identical misses, each
  computation taking ``--delay`` s: upstream calls made (target: 1 with locks,
  one per gateway without);
* miss path: sequential misses on fresh keys with an instant computation, so the
  figure is what the lock adds to a miss (take, re-read, release + publish);
* follower wake-up: from the leader's ``finish()`` (entry stored, lock
  released) to a waiting gateway's answer (pub/sub, then a read);
* store read: ``RedisStore.aget`` on the asyncio client against the sync call on a
  worker thread (what it did before), interleaved.

    python benchmarks/cross_gateway.py [--redis URL] [--gateways 4] [--requests 16]
                                       [--misses 400] [--wakeups 50] [--json]

Without ``--redis`` a private ``redis-server`` is started on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from promptcache.response_cache import Lead, ResponseCache
from promptcache.result import Choice, Result, Usage
from promptcache.store.base import ResponseStore
from promptcache.store.redis import RedisStore, RedisStoreConfig


class _WithoutLocks(RedisStore):
    """The same store, as it was before: coalescing within each process only."""

    def flight_locks(self) -> None:  # type: ignore[override]
        return None


def _result(n: int) -> Result:
    return Result(
        id=f"bench-{n}",
        model="m",
        created=1_700_000_000,
        choices=(Choice(text="an answer of a few words", finish_reason="stop"),),
        usage=Usage(input_tokens=100, output_tokens=6),
    )


def _caches(url: str, count: int, *, locks: bool) -> list[ResponseCache]:
    kind = RedisStore if locks else _WithoutLocks
    return [ResponseCache(kind(RedisStoreConfig(url=url))) for _ in range(count)]


async def _burst(caches: list[ResponseCache], requests: int, delay: float, key: str) -> int:
    calls = 0

    async def compute() -> Result:
        nonlocal calls
        calls += 1
        await asyncio.sleep(delay)
        return _result(calls)

    await asyncio.gather(
        *(caches[i % len(caches)].get_or_compute(key, compute) for i in range(requests))
    )
    return calls


async def _misses(cache: ResponseCache, count: int, tag: str) -> list[float]:
    async def compute() -> Result:
        return _result(0)

    samples = []
    for i in range(count):
        start = time.perf_counter()
        await cache.get_or_compute(f"miss-{tag}-{i}", compute)
        samples.append(time.perf_counter() - start)
    return samples


async def _wakeups(leader: ResponseCache, follower: ResponseCache, count: int) -> list[float]:
    samples = []
    for i in range(count):
        key = f"wake-{i}"
        lead = await leader.lookup_or_lead(key)
        assert isinstance(lead, Lead)
        following = asyncio.create_task(follower.get_or_compute(key, _never))
        await asyncio.sleep(0.02)  # the follower subscribes and waits
        lead.publish(_result(i))
        start = time.perf_counter()
        await lead.finish()
        await following
        samples.append(time.perf_counter() - start)
    return samples


async def _never() -> Result:
    raise RuntimeError("a follower computed: coalescing failed")


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def _measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"gateways": args.gateways, "requests": args.requests}
    calls = {}
    for locks in (False, True):
        caches = _caches(url, args.gateways, locks=locks)
        calls["locks" if locks else "in_process_only"] = await _burst(
            caches, args.requests, args.delay, f"burst-{locks}-{time.time()}"
        )
    report["burst_upstream_calls"] = calls
    report["burst_calls_ratio"] = round(calls["in_process_only"] / max(calls["locks"], 1), 2)

    plain, locked = _caches(url, 1, locks=False)[0], _caches(url, 1, locks=True)[0]
    misses: dict[str, list[float]] = {"in_process_only": [], "locks": []}
    for round_ in range(4):  # interleaved, so drift in the machine's load hits both
        for name, cache in (("in_process_only", plain), ("locks", locked)):
            misses[name] += await _misses(cache, args.misses // 4, f"{name}-{round_}-{time.time()}")
    report["miss"] = {name: _ms(samples) for name, samples in misses.items()}
    report["miss_p50_ratio"] = round(
        report["miss"]["locks"]["p50_ms"] / report["miss"]["in_process_only"]["p50_ms"], 2
    )
    leader, follower = _caches(url, 2, locks=True)
    report["follower_wakeup"] = _ms(await _wakeups(leader, follower, args.wakeups))
    reads = report["store_read"] = await _reads(url, args.misses)
    report["store_read_p50_ratio"] = round(
        reads["worker_thread"]["p50_ms"] / reads["asyncio"]["p50_ms"], 2
    )
    return report


async def _reads(url: str, count: int) -> dict[str, dict[str, float]]:
    store = RedisStore(RedisStoreConfig(url=url))
    store.put("read", b"x" * 2000)
    samples: dict[str, list[float]] = {"worker_thread": [], "asyncio": []}
    for _ in range(count):
        for name, read in (("worker_thread", ResponseStore.aget), ("asyncio", RedisStore.aget)):
            start = time.perf_counter()
            await read(store, "read")
            samples[name].append(time.perf_counter() - start)
    return {name: _ms(values) for name, values in samples.items()}


@contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; pass --redis URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default=None, help="Redis URL (default: a private server)")
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds per computation")
    parser.add_argument("--misses", type=int, default=400)
    parser.add_argument("--wakeups", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with _redis(args.redis) as url:
        report = asyncio.run(_measure(url, args))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    calls = report["burst_upstream_calls"]
    print(
        f"burst of {args.requests} identical misses over {args.gateways} gateways: "
        f"{calls['in_process_only']} upstream calls in-process only, {calls['locks']} with "
        f"Redis locks ({report['burst_calls_ratio']}x fewer)"
    )
    miss = report["miss"]
    print(
        f"miss path p50: {miss['in_process_only']['p50_ms']} ms in-process only, "
        f"{miss['locks']['p50_ms']} ms with locks ({report['miss_p50_ratio']}x)"
    )
    reads = report["store_read"]
    print(
        f"store read p50: {reads['worker_thread']['p50_ms']} ms on a worker thread, "
        f"{reads['asyncio']['p50_ms']} ms on the asyncio client "
        f"({report['store_read_p50_ratio']}x faster)"
    )
    print(
        f"follower wake-up after the leader's finish: p50 {report['follower_wakeup']['p50_ms']} ms"
    )


if __name__ == "__main__":
    main()
