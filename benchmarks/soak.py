"""Soak: 32 loopback clients against ``promptcache serve`` through a Redis outage and a SIGKILL.

A bounded run (``--duration`` seconds of load, default 300) of the embedded
model with a small KV prefix cache (``--kv-cache-bytes 64MB``,
``--min-cache-tokens 64``, so misses really read, write and evict KV blocks).
Timeline, in fractions of the load time (pauses to drain and restart are not
load time, and each is bounded):

- 0 -- 0.40: the server on a private ``redis-server`` store. Redis is killed at
  0.12 and restarted (empty) at 0.27: meanwhile every lookup is a miss, never
  a 5xx. After the restart a probe measures how soon a stored entry HITs again.
- then clients pause, in-flight requests drain, the KV references at rest are
  read, the server gets SIGTERM, and a server on SQLite (in a temporary
  directory) takes the remaining 0.60.
- 0.32 into that phase (once 20 entries are stored): SIGKILL under load
  (in-flight requests are cut), a restart on the same file, and every entry
  stored so far must still be a HIT.
- at the end clients stop; every SQLite entry is checked again, the KV
  references at rest are read once more, and both processes are stopped.

Each client loops over a seeded mix (see ``_soak_requests.py``): response-cache
hits, unique misses, streams in both dialects, streams closed after their
first chunk, and a hostile corpus taken in turn. Every loop is bounded by
count and time; each request by a total timeout (``--request-timeout``), after
which it counts as *hung*. At most ``--miss-slots`` requests meant to reach
the model (misses, streams, schemas the engine compiles) and ``--pool-slots``
hit-pool requests not known to be stored are in flight, so a wait in the
engine queue stays well under that timeout on a slow machine; a client that
finds its slots taken sends a pool hit or a hostile input instead of waiting
idle. A "stored entry" is a
greedy non-stream MISS answered 200 with an ``x-promptcache-key``: the server
writes it before it answers.

Peak RSS (sampled, and the kernel's ``VmHWM``) is held against a budget per
server process: its RSS once ready (weights + runtime, before any request)
+ ``--kv-cache-bytes`` + a fixed slack for request KV buffers, grammars and
allocator growth.

Prints one table on stdout (``--json``: one object), progress and failure
examples on stderr, and exits 1 when any check fails (2 when it cannot run,
130 when interrupted; every child process and the temporary directory go
either way). Needs ``redis-server`` (Debian: ``apt-get install redis-server``).

    python benchmarks/soak.py [--duration 300] [--clients 32] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from _soak_load import (
    HIT,
    Context,
    Entry,
    Gate,
    client_loop,
    log,
    send,
    watch_server,
)
from _soak_procs import Children, Redis, Server, free_port, redis_binary
from _soak_report import Results, SoakConfig, gib, render, report_details
from _soak_requests import JSON_HEADERS, OPENAI_PATH, Planned, openai_body

KV_CACHE_BYTES = 64 << 20
MIN_CACHE_TOKENS = 64
MAX_BODY_BYTES = 1 << 20
ENGINE_WORKERS = 4
RSS_SLACK_BYTES = 512 << 20
CONFIG = SoakConfig(
    kv_cache_bytes=KV_CACHE_BYTES,
    min_cache_tokens=MIN_CACHE_TOKENS,
    max_body_bytes=MAX_BODY_BYTES,
    engine_workers=ENGINE_WORKERS,
    rss_slack_bytes=RSS_SLACK_BYTES,
)
FIRST_START_TIMEOUT = 900.0  # a fresh clone converts the weights on first start
RESTART_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
AT_REST_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 60.0
VERIFY_CONCURRENCY = 8
VERIFY_TIMEOUT = 180.0

REDIS_KILL_AT, REDIS_BACK_AT, SWITCH_AT, SIGKILL_AT = 0.12, 0.27, 0.40, 0.72
NO_REDIS_SIGKILL_AT = 0.60
MIN_ENTRIES_BEFORE_KILL = 20


# -- controller steps ---------------------------------------------------------


async def at_rest(ctx: Context, server: Server) -> dict[str, Any]:
    """The prefix cache once no request is in flight (polled until the engine is idle)."""
    deadline = time.monotonic() + AT_REST_TIMEOUT
    figures: dict[str, Any] = {"blocks_referenced": None}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as http:
        while True:
            try:
                stats = (await http.get("/v1/cache/stats")).json()
                prefix = stats.get("prefix_cache") or {}
                engine = stats.get("engine") or {}
                figures = {
                    "blocks_referenced": prefix.get("blocks_referenced"),
                    "blocks_used": prefix.get("blocks_used"),
                    "evictions": prefix.get("evictions"),
                    "tokens_hit": prefix.get("tokens_hit"),
                    "running": engine.get("running"),
                    "queue_depth": engine.get("queue_depth"),
                }
            except (httpx.HTTPError, ValueError) as exc:
                figures["error"] = f"{type(exc).__name__}: {exc}"
            idle = figures.get("running") == 0 and figures.get("queue_depth") == 0
            if (idle and figures.get("blocks_referenced") == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    figures["server"] = server.label
    ctx.event(f"at rest on {server.label}: {figures}")
    return figures


async def verify_entries(ctx: Context, server: Server, entries: list[Entry]) -> list[str]:
    """Each entry must be a HIT with its key now; returns why each lost one is lost."""
    lost: list[str] = []
    limit = asyncio.Semaphore(VERIFY_CONCURRENCY)

    async def check(http: httpx.AsyncClient, entry: Entry) -> None:
        async with limit:
            status, cache, detail = await send(http, entry.planned, ctx.request_timeout)
        if status != "200" or cache != HIT or detail != entry.key:
            lost.append(f"{entry.planned.kind} {entry.key[:24]}…: {status} {cache} {detail[:80]}")

    async with httpx.AsyncClient(base_url=server.base_url, timeout=ctx.request_timeout) as http:
        checks = [asyncio.create_task(check(http, entry)) for entry in entries]
        _, unfinished = await asyncio.wait(checks, timeout=VERIFY_TIMEOUT) if checks else ((), ())
        for task in unfinished:
            task.cancel()
        if unfinished:
            lost.append(f"{len(unfinished)} entries not checked within {VERIFY_TIMEOUT:.0f} s")
    return lost


async def probe_store_recovery(ctx: Context, server: Server) -> float | None:
    """Seconds until a freshly stored entry HITs again after the Redis restart."""
    started = time.monotonic()
    attempt = 0
    async with httpx.AsyncClient(base_url=server.base_url, timeout=ctx.request_timeout) as http:
        while time.monotonic() - started < RECOVERY_TIMEOUT:
            attempt += 1
            body = json.dumps(openai_body(f"Recovery probe {attempt} {started}", max_tokens=2))
            planned = Planned(
                kind="probe", path=OPENAI_PATH, body=body.encode(), headers=JSON_HEADERS
            )
            first = await send(http, planned, ctx.request_timeout)
            second = await send(http, planned, ctx.request_timeout)
            if first[0] == "200" and second[:2] == ("200", HIT):
                return time.monotonic() - started
            await asyncio.sleep(0.5)
    return None


async def soak(
    args: argparse.Namespace, workdir: Path, children: Children
) -> tuple[Context, Results]:
    """The run; Ctrl-C, SIGTERM or SIGHUP kill the children at once and raise
    KeyboardInterrupt (a cancellation alone may be swallowed inside httpx's
    shielded clean-up, so the handler also makes every pending step fail fast)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    gate = Gate(float(args.duration))
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def interrupt(signum: int) -> None:
        if gate.interrupted:
            return
        gate.interrupted = True
        log(f"[yellow]signal {signum}: stopping the server and Redis[/yellow]")
        children.close()
        gate.finish()
        if task is not None:
            task.cancel()

    for sig in signals:
        loop.add_signal_handler(sig, interrupt, sig)
    try:
        return await _soak(args, workdir, children, gate)
    except BaseException:
        if gate.interrupted:  # whatever the kill made fail on the way out
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _soak(
    args: argparse.Namespace, workdir: Path, children: Children, gate: Gate
) -> tuple[Context, Results]:
    results = Results()
    duration = gate.duration
    options = [
        "--kv-cache-bytes", str(KV_CACHE_BYTES),
        "--min-cache-tokens", str(MIN_CACHE_TOKENS),
        "--max-body-bytes", str(MAX_BODY_BYTES),
        "--engine-workers", str(ENGINE_WORKERS),
        "--max-queue", str(max(32, args.clients)),
    ]  # fmt: skip
    binary = redis_binary()
    redis: Redis | None = None
    if binary is not None:
        redis_dir = workdir / "redis"
        redis_dir.mkdir()
        redis = Redis(children=children, binary=binary, workdir=redis_dir)
        await redis.start()
    sqlite_server = Server(
        children=children,
        workdir=workdir,
        port=free_port(),
        options=[*options, "--store", f"sqlite:///{workdir / 'responses.db'}"],
        log_path=workdir / "server-sqlite.log",
    )
    servers = [sqlite_server]
    first = sqlite_server
    if redis is not None:
        first = Server(
            children=children,
            workdir=workdir,
            port=free_port(),
            options=[*options, "--store", redis.url],
            log_path=workdir / "server-redis.log",
        )
        servers.insert(0, first)
    label = "redis-store server" if redis is not None else "sqlite-store server"
    log(f"starting {label} on {first.base_url} (the first start may convert weights)")
    took = await first.start(label, timeout=FIRST_START_TIMEOUT)
    log(f"ready in {took:.1f} s, RSS {gib(first.memory[-1].ready_rss)}")

    gate.start_load()
    ctx = Context(
        server=first,
        gate=gate,
        request_timeout=args.request_timeout,
        think_seconds=args.think_ms / 1000.0,
        slots={
            "miss": asyncio.Semaphore(args.miss_slots),
            "pool": asyncio.Semaphore(args.pool_slots),
        },
        record_entries=redis is None,
    )
    if redis is None:
        ctx.problems.append("redis-server is not installed: no Redis phase")
    ctx.event(f"{args.clients} clients start, {duration:.0f} s")
    clients = [
        asyncio.create_task(client_loop(i, ctx, args.seed, MAX_BODY_BYTES))
        for i in range(args.clients)
    ]
    sampler = asyncio.create_task(watch_server(ctx))
    try:
        await _timeline(ctx, results, redis, first, sqlite_server, duration)
    except (RuntimeError, OSError) as exc:
        results.error = f"{type(exc).__name__}: {exc}"
        ctx.event(f"soak aborted: {results.error}")
        ctx.problems.append(f"{ctx.server.label} log ends:\n{ctx.server.log_tail()}")
    finally:
        results.wall_seconds = time.monotonic() - ctx.gate.started
        ctx.gate.finish()
        # Clients stop after the request they are on (bounded by its timeout).
        wait = 10.0 if gate.interrupted else args.request_timeout + 30
        done, pending = await asyncio.wait(clients, timeout=wait)
        for client in pending:
            client.cancel()
        for client in done:
            if not client.cancelled() and client.exception() is not None:
                ctx.problems.append(f"a client crashed: {client.exception()!r}")
        results.requests_sent = sum(
            t.result() for t in done if not t.cancelled() and t.exception() is None
        )
        ctx.event(f"clients stopped ({len(pending)} cancelled)")
    if gate.interrupted:
        raise KeyboardInterrupt
    try:
        if results.error is None and sqlite_server.pid is not None:
            entries = list(ctx.entries.values())
            lost = await verify_entries(ctx, sqlite_server, entries)
            results.entries_checked = len(entries)
            results.lost.extend(f"at the end: {why}" for why in lost)
            ctx.event(f"end: {len(entries) - len(lost)}/{len(entries)} SQLite entries HIT")
            results.at_rest.append(await at_rest(ctx, sqlite_server))
    finally:
        sampler.cancel()
        for server in servers:
            if server.pid is not None:
                results.sigterm_stopped.append(server.stop(timeout=STOP_TIMEOUT))
            results.memory.extend(server.memory)
        if redis is not None:
            redis.kill()
    return ctx, results


async def _timeline(
    ctx: Context,
    results: Results,
    redis: Redis | None,
    first: Server,
    sqlite_server: Server,
    duration: float,
) -> None:
    gate = ctx.gate
    sqlite_starts = 0.0  # load seconds at which the SQLite phase begins
    if redis is not None:
        await gate.at_load(REDIS_KILL_AT * duration)
        redis.kill()
        ctx.outage = True
        ctx.store_epoch += 1
        outage_started = time.monotonic()
        ctx.event("Redis SIGKILL (the server must answer misses, never 5xx)")
        await gate.at_load(REDIS_BACK_AT * duration)
        await redis.start()
        ctx.outage = False
        ctx.store_epoch += 1
        results.redis_outage_seconds = time.monotonic() - outage_started
        ctx.event("Redis restarted (empty)")
        # Under load: the probe queues behind the clients' misses (bounded).
        results.redis_recovery_seconds = await probe_store_recovery(ctx, first)
        ctx.event(f"store HITs again {results.redis_recovery_seconds} s after the Redis restart")

        await gate.at_load(SWITCH_AT * duration)
        gate.pause()
        drained = await gate.drain(ctx.request_timeout + 10)
        ctx.event(f"paused to switch to SQLite (drained: {drained})")
        results.at_rest.append(await at_rest(ctx, first))
        stopped = await asyncio.to_thread(first.stop, timeout=STOP_TIMEOUT)
        results.sigterm_stopped.append(stopped)
        if not stopped:
            ctx.problems.append(f"SIGTERM did not stop the {first.label} within {STOP_TIMEOUT} s")
        took = await sqlite_server.start("sqlite-store server", timeout=RESTART_TIMEOUT)
        ctx.server = sqlite_server
        ctx.store_epoch += 1
        ctx.record_entries = True
        ctx.event(f"sqlite-store server ready in {took:.1f} s")
        sqlite_starts = gate.load_elapsed()
        gate.resume()

    # The SQLite phase gets its share of load however long the Redis phase ran.
    phase = (1.0 - SWITCH_AT if redis is not None else 1.0) * duration
    kill_share = SIGKILL_AT - SWITCH_AT if redis is not None else NO_REDIS_SIGKILL_AT
    kill_at = sqlite_starts + kill_share * duration
    await gate.at_load(kill_at)
    # The kill must have stored entries to lose: wait for some, within the phase.
    while len(ctx.entries) < MIN_ENTRIES_BEFORE_KILL and gate.load_elapsed() < kill_at + phase / 4:
        await asyncio.sleep(0.2)
    gate.pause()
    in_flight = gate.in_flight
    sqlite_server.kill()
    ctx.event(f"server SIGKILL under load ({in_flight} requests in flight)")
    results.sigkill_restart_seconds = await sqlite_server.start(
        "sqlite-store server (after SIGKILL)", timeout=RESTART_TIMEOUT
    )
    ctx.event(f"restarted on the same SQLite file in {results.sigkill_restart_seconds:.1f} s")
    entries = list(ctx.entries.values())
    lost = await verify_entries(ctx, sqlite_server, entries)
    results.entries_across_kill = len(entries)
    results.lost.extend(f"after SIGKILL: {why}" for why in lost)
    ctx.event(f"{len(entries) - len(lost)}/{len(entries)} stored entries HIT after the restart")
    gate.resume()
    await gate.at_load(sqlite_starts + phase)
    gate.finish()


# -- entry point --------------------------------------------------------------


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP unwind like Ctrl-C, so the finally blocks stop every child."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--request-timeout", type=float, default=60.0, help="then it is hung")
    parser.add_argument("--think-ms", type=float, default=20.0, help="max pause between requests")
    parser.add_argument(
        "--miss-slots",
        type=int,
        default=12,
        help="most misses, streams and engine-compiled schemas in flight",
    )
    parser.add_argument(
        "--pool-slots",
        type=int,
        default=8,
        help="most hit-pool requests not known to hit in flight (they run the model "
        "after a restart or during the Redis outage); when both are full, clients send "
        "hostile inputs",
    )
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--keep-logs", type=Path, help="copy the server and Redis logs here")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.duration < 10 or min(args.clients, args.miss_slots, args.pool_slots) < 1:
        parser.error("--duration must be >= 10; --clients, --miss-slots, --pool-slots >= 1")
    if args.request_timeout <= 0:
        parser.error("--request-timeout must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = Children()
    with (
        tempfile.TemporaryDirectory(prefix="promptcache-soak-") as tmp,
        interrupts_as_keyboard_interrupt(),
    ):
        workdir = Path(tmp)
        try:
            ctx, results = asyncio.run(soak(args, workdir, children))
        except KeyboardInterrupt:
            log("[yellow]interrupted: no report[/yellow]")
            return 130
        except RuntimeError as exc:  # a process that would not start: nothing to report
            log(f"[red]soak could not run: {exc}[/red]")
            for path in sorted(workdir.rglob("*.log")):
                log(
                    f"{path.name}:\n"
                    + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
                )
            return 2
        finally:
            children.kill_all()
            logs = sorted(workdir.rglob("*.log"))
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for path in logs:
                    shutil.copy(path, args.keep_logs / path.name)
        report_details(ctx, results, logs)
        ok = render(args, ctx, results, CONFIG)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
