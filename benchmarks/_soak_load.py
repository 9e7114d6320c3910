"""The soak's load side: clients, the gate that pauses them, and what they saw.

Each client is a loop bounded by count (``MAX_REQUESTS_PER_CLIENT``) and time
(the gate's end); each request by a total timeout, past which it is *hung*.
Outcomes are tallied by kind and status: an HTTP status, or ``hung``,
``transport`` (a connection broke), ``cut`` (broken because the controller
killed or stopped the server meanwhile: expected), ``stream-broken`` (a 200
stream without its terminator), ``sse-error`` / ``sse-server-error`` (an
in-band error frame; the latter a server fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from rich.console import Console

from _soak_procs import Server
from _soak_requests import OPENAI_PATH, Planned, Planner

MAX_REQUESTS_PER_CLIENT = 50_000
HARD_LIMIT_SLACK = 600.0
FAILURE_EXAMPLES = 3
HOSTILE_FALLBACK_PAUSE = 0.5

# Outcomes that fail the soak besides 5xx: the server never answered in time, a
# connection broke outside a deliberate kill, a stream ended without its
# terminator, or a stream reported a server error in-band.
FAILING = ("hung", "transport", "stream-broken", "sse-server-error")
HIT, MISS = "HIT", "MISS"

console = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def is_failure(status: str) -> bool:
    return status in FAILING or (status.isdigit() and int(status) >= 500)


# -- bookkeeping --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Entry:
    planned: Planned
    key: str


@dataclass
class Tally:
    """Every request's outcome, by kind and status, and a few examples of each failure."""

    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    cache: Counter[str] = field(default_factory=Counter)
    examples: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    during_outage: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, status: str, detail: str, *, outage: bool) -> None:
        self.by_kind.setdefault(kind, Counter())[status] += 1
        if outage:
            self.during_outage[status] += 1
        if is_failure(status) or (status.isdigit() and not status.startswith("2")):
            shown = self.examples.setdefault((kind, status), [])
            if len(shown) < FAILURE_EXAMPLES:
                shown.append(detail[:300])

    def statuses(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.by_kind.values():
            total.update(counts)
        return total


class Gate:
    """Lets clients through while the load runs; the controller pauses it to drain.

    Time spent paused (draining, restarting, checking entries) is not load time
    (:meth:`load_elapsed`), so every phase gets its share of ``--duration``
    however slow a restart is; each pause is bounded, and so is the whole run.
    """

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.interrupted = False
        self.in_flight = 0
        self.start_load()
        self._open = asyncio.Event()
        self._open.set()
        self._paused_at: float | None = None
        self._paused_total = 0.0

    def start_load(self) -> None:
        self.started = time.monotonic()
        # The controller ends the load (finish); this only bounds a controller gone wrong.
        self.end = self.started + 2 * self.duration + HARD_LIMIT_SLACK

    def load_elapsed(self) -> float:
        paused_now = time.monotonic() - self._paused_at if self._paused_at is not None else 0.0
        return time.monotonic() - self.started - self._paused_total - paused_now

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()
        self._open.clear()

    def resume(self) -> None:
        if self._paused_at is not None:
            pause = time.monotonic() - self._paused_at
            self._paused_total += pause
            self.end += pause
            self._paused_at = None
        self._open.set()

    def finish(self) -> None:
        """End the load now: waiting clients wake, see the end passed and stop."""
        self.end = min(self.end, time.monotonic())
        self._paused_at = None
        self._open.set()

    async def wait_open(self) -> bool:
        """True while the load runs and the gate is open *now*; False once it ended.

        Re-checked after every wake-up: a gate opened and paused again while this
        waiter was waking (the controller ran first) does not let it through.
        """
        while True:
            if self._open.is_set():
                return time.monotonic() < self.end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._open.wait(), 1.0)

    async def at_load(self, seconds: float) -> None:
        """Sleep until ``seconds`` of load time have run."""
        while (remaining := seconds - self.load_elapsed()) > 0:
            await asyncio.sleep(min(remaining, 0.25))

    async def drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.in_flight == 0


@dataclass(kw_only=True)
class Context:
    server: Server
    gate: Gate
    request_timeout: float
    think_seconds: float
    slots: dict[str, asyncio.Semaphore]
    """Bound the requests that may run the model, by ``Planned.slot``: beyond a few
    they only queue in the engine, and a queue as deep as the clients are many
    makes a slow machine's misses look hung."""
    store_epoch: int = 0
    """Bumped whenever stored entries may be gone (Redis killed or restarted, a new
    server): a pool request is only known to hit within one epoch."""
    pool_stored: set[tuple[int, bytes]] = field(default_factory=set)
    """(store epoch, body) of pool requests answered 200 then: they hit, need no slot."""
    tally: Tally = field(default_factory=Tally)
    entries: dict[str, Entry] = field(default_factory=dict)
    record_entries: bool = False
    outage: bool = False
    events: list[str] = field(default_factory=list)
    peak_load: float = 0.0
    """Highest 1-minute load average seen: above the CPU count, other work starved the
    server, and a hang may be that rather than a fault."""
    problems: list[str] = field(default_factory=list)

    def slot_for(self, planned: Planned) -> asyncio.Semaphore | None:
        if planned.slot == "pool" and (self.store_epoch, planned.body) in self.pool_stored:
            return None  # a known hit: it will not reach the model
        return self.slots.get(planned.slot)

    def event(self, message: str) -> None:
        stamped = f"t+{time.monotonic() - self.gate.started:5.1f}s {message}"
        self.events.append(stamped)
        log(stamped)


# -- one request --------------------------------------------------------------


async def send(http: httpx.AsyncClient, planned: Planned, timeout: float) -> tuple[str, str, str]:
    """(status, cache header, detail) of one request; never raises for a server's fault."""
    try:
        async with asyncio.timeout(timeout):
            if planned.stream:
                return await _send_stream(http, planned)
            response = await http.post(
                planned.path, content=planned.content(), headers=planned.headers
            )
            status = str(response.status_code)
            cache = response.headers.get("x-promptcache", "")
            key = response.headers.get("x-promptcache-key", "")
            return status, cache, key if status == "200" else response.text[:300]
    except TimeoutError:
        return "hung", "", f"no complete answer within {timeout:.0f} s"
    except httpx.TransportError as exc:
        return "transport", "", f"{type(exc).__name__}: {exc}"


async def _send_stream(http: httpx.AsyncClient, planned: Planned) -> tuple[str, str, str]:
    async with http.stream(
        "POST", planned.path, content=planned.content(), headers=planned.headers
    ) as response:
        status = str(response.status_code)
        cache = response.headers.get("x-promptcache", "")
        if status != "200":
            return status, cache, (await response.aread()).decode(errors="replace")[:300]
        if planned.disconnect:
            # Leaving the context unread closes the connection: the server sees
            # the client go away and must cancel the generation and its KV refs.
            async for chunk in response.aiter_raw():
                if chunk:
                    break
            return "200", cache, "closed after the first chunk"
        body = (await response.aread()).decode(errors="replace")
    return _judge_stream(planned, body), cache, body[-300:]


def _judge_stream(planned: Planned, body: str) -> str:
    """200 for a stream that ended with its terminator; else how it ended."""
    for line in body.splitlines():
        if not line.startswith("data: {"):
            continue
        try:
            frame = json.loads(line[len("data: ") :])
        except ValueError:
            return "stream-broken"
        # In-band errors: OpenAI {"error": {...}}, Anthropic {"type": "error", "error": {...}}.
        error = frame.get("error") if isinstance(frame, dict) else None
        if isinstance(error, dict):
            server_side = error.get("type") in ("server_error", "api_error")
            return "sse-server-error" if server_side else "sse-error"
    done = "data: [DONE]" if planned.path == OPENAI_PATH else "event: message_stop"
    return "200" if done in body else "stream-broken"


# -- clients ----------------------------------------------------------------


async def client_loop(index: int, ctx: Context, seed: int, max_body: int) -> int:
    rng = random.Random(seed * 1_000 + index)
    planner = Planner(rng=rng, client=index, max_body=max_body)
    http: httpx.AsyncClient | None = None
    bound: tuple[int, int] = (-1, -1)
    sent = 0
    try:
        while sent < MAX_REQUESTS_PER_CLIENT:
            planned = planner.next()
            # The model as busy as the soak lets it be: rather than wait idle, load
            # the response-cache path (pool hits), or else request parsing (hostile),
            # paced: a flood of cheap 4xx would starve the model of CPU.
            for fallback in (("hit", "hostile"), ("hostile",), ("hostile",), ("hostile",)):
                slot = ctx.slot_for(planned)
                if slot is None or not slot.locked():
                    break
                if fallback == ("hostile",):
                    await asyncio.sleep(rng.uniform(0, HOSTILE_FALLBACK_PAUSE))
                planned = planner.next(fallback)
            slot = ctx.slot_for(planned)
            async with slot or contextlib.nullcontext():
                if not await ctx.gate.wait_open():
                    break
                server = ctx.server
                if bound != (id(server), server.generation):
                    # A new process: connections pooled to the old one are dead.
                    if http is not None:
                        await http.aclose()
                    http = httpx.AsyncClient(base_url=server.base_url, timeout=ctx.request_timeout)
                    bound = (id(server), server.generation)
                assert http is not None
                sent += 1
                epoch, outage, store_epoch = server.epoch, ctx.outage, ctx.store_epoch
                ctx.gate.in_flight += 1
                try:
                    status, cache, detail = await send(http, planned, ctx.request_timeout)
                finally:
                    ctx.gate.in_flight -= 1
            if status == "transport" and server.epoch != epoch:
                status = "cut"  # in flight when the controller killed or stopped the server
            where = f"t+{time.monotonic() - ctx.gate.started:.1f}s {server.label}: "
            ctx.tally.add(planned.kind, status, where + detail, outage=outage or ctx.outage)
            if status == "200" and cache:
                ctx.tally.cache[cache] += 1
                if planned.slot == "pool" and store_epoch == ctx.store_epoch and not outage:
                    ctx.pool_stored.add((store_epoch, planned.body))
            if (
                planned.records
                and ctx.record_entries
                and status == "200"
                and cache == MISS
                and detail.startswith("pc1:")
            ):
                ctx.entries.setdefault(detail, Entry(planned=planned, key=detail))
            if ctx.think_seconds:
                await asyncio.sleep(rng.uniform(0, ctx.think_seconds))
    finally:
        if http is not None:
            await http.aclose()
    return sent


async def watch_server(ctx: Context) -> None:
    """Sample memory, and note a server that exits without the controller killing it."""
    reported: set[tuple[int, int]] = set()
    while True:
        server = ctx.server
        server.sample_memory()
        with contextlib.suppress(OSError):  # no load average on some platforms
            ctx.peak_load = max(ctx.peak_load, os.getloadavg()[0])
        proc = server.proc
        mark = (id(server), server.generation)
        died = proc is not None and proc.poll() is not None
        by_itself = server.epoch == server.started_epoch and not ctx.gate.interrupted
        if died and by_itself and mark not in reported:
            assert proc is not None
            reported.add(mark)
            ctx.problems.append(f"{server.label} exited by itself with {proc.returncode}")
            ctx.event(f"[red]{server.label} exited by itself with {proc.returncode}[/red]")
        await asyncio.sleep(0.25)
