"""Several gateways, one cache: two real ``promptcache serve`` processes on one Redis.

In front of a slow fake upstream (an OpenAI-compatible app in this process that
counts its calls), concurrent identical requests split across both gateways
cost one upstream call, streamed or not (one tenant across the fleet: the same API
key under the same ``--tenant-secret``); a leader killed mid-generation leaves
its followers on the other gateway an answer (one of them leads again); with
Redis stopped every request still succeeds. Clients are the official OpenAI SDK.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from promptcache.store.redis_lock import LOCK_INFIX
from tests.conftest import RedisProcess
from tests.server.fakes import FakeSyncEngine
from tests.server.live import fake_upstream

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and processes")

API_KEY = "sk-gateway-fleet-key"
TENANT_SECRET = "a-tenant-secret-every-gateway-shares-0123456789"
_AUTH = {"Authorization": f"Bearer {API_KEY}"}
_CLIENT_TIMEOUT = 60.0
"""The bound on every answer: a follower left waiting forever fails the test."""


@dataclass
class Upstream:
    url: str
    fake: FakeSyncEngine

    def calls_for(self, prompt: str) -> int:
        return sum(1 for r in self.fake.requests if r.messages[-1].text() == prompt)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """An OpenAI-compatible upstream answering ``echo: <prompt>`` at 0.3 s a word."""
    with fake_upstream(token_delay=0.3) as (url, fake):
        yield Upstream(url, fake)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """One ``promptcache serve`` process on 127.0.0.1."""

    def __init__(self, upstream: str, store: str, cwd: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [
            str(Path(sys.executable).parent / "promptcache"), "serve",
            "--port", str(self.port),
            "--store", store,
            "--upstream-url", upstream,
            "--upstream-model", "fake-model",
            # One tenant on every gateway: the same key under the same tenant secret.
            "--api-key", API_KEY,
            "--tenant-secret", TENANT_SECRET,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTCACHE_")}
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.client = openai.OpenAI(
            base_url=f"{self.base}/v1", api_key=API_KEY, max_retries=0, timeout=_CLIENT_TIMEOUT
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"promptcache serve exited: {stderr}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("promptcache serve did not start")

    def cross_process(self) -> dict[str, int]:
        stats = httpx.get(f"{self.base}/v1/cache/stats", headers=_AUTH, timeout=10).json()
        counts: dict[str, int] = stats["response_cache"]["cross_process"]
        return counts

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def gateways(
    redis_process: RedisProcess, upstream: Upstream, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway]]:
    store = redis_process.url + "?lock_ttl=2"  # a dead leader's lock is gone within 2 s
    pair = (Gateway(upstream.url, store, tmp_path), Gateway(upstream.url, store, tmp_path))
    try:
        for gateway in pair:
            gateway.wait_ready()
        yield pair
    finally:
        for gateway in pair:
            gateway.stop()


@dataclass
class Answer:
    text: str
    status: str


def _ask(gateway: Gateway, prompt: str) -> Answer:
    raw = gateway.client.chat.completions.with_raw_response.create(
        model="fake-model", temperature=0, messages=[{"role": "user", "content": prompt}]
    )
    completion = raw.parse()
    return Answer(completion.choices[0].message.content or "", raw.headers["x-promptcache"])


def _ask_streaming(gateway: Gateway, prompt: str) -> Answer:
    raw = gateway.client.chat.completions.with_raw_response.create(
        model="fake-model",
        temperature=0,
        stream=True,
        messages=[{"role": "user", "content": prompt}],
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    return Answer(text, raw.headers["x-promptcache"])


def _burst(
    ask: Callable[[Gateway, str], Answer], targets: list[Gateway], prompt: str
) -> list[Answer]:
    """One request per target, all released at once."""
    start = threading.Barrier(len(targets))

    def one(gateway: Gateway) -> Answer:
        start.wait()
        return ask(gateway, prompt)

    with ThreadPoolExecutor(len(targets)) as pool:
        return list(pool.map(one, targets))


def test_sixteen_identical_requests_across_two_gateways_make_one_upstream_call(
    gateways: tuple[Gateway, Gateway], upstream: Upstream
) -> None:
    a, b = gateways
    # ~1.5 s upstream each: a burst arrives while its leader generates.
    bursts = [(_ask, "one two three four"), (_ask_streaming, "five six seven eight")]
    for ask, prompt in bursts:
        answers = _burst(ask, [a, b] * 8, prompt)
        assert upstream.calls_for(prompt) == 1, (a.cross_process(), b.cross_process())
        assert {answer.text for answer in answers} == {f"echo: {prompt}"}
        assert sorted(answer.status for answer in answers) == ["HIT"] * 15 + ["MISS"]
        # Shared entries: either gateway answers the same request from the store.
        assert _ask(b, prompt) == Answer(f"echo: {prompt}", "HIT")
        assert _ask_streaming(a, prompt) == Answer(f"echo: {prompt}", "HIT")

    # Per burst one gateway led and the other's local leader followed it (the rest of
    # each gateway's requests waited on their local leader).
    counts = [a.cross_process(), b.cross_process()]
    assert sum(c["leads"] for c in counts) == 2
    assert sum(c["follows"] for c in counts) == 2
    assert all(c["takeovers"] == c["wait_timeouts"] == c["unavailable"] == 0 for c in counts)
    metrics = httpx.get(f"{a.base}/metrics", headers=_AUTH, timeout=10).text
    assert (
        f'promptcache_cross_process_coalescing_total{{outcome="leads"}} {counts[0]["leads"]}.0'
        in metrics
    )


def _until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_leader_killed_mid_generation_leaves_the_followers_an_answer(
    gateways: tuple[Gateway, Gateway], upstream: Upstream, redis_process: RedisProcess
) -> None:
    a, b = gateways
    prompt = "w1 w2 w3 w4 w5 w6 w7 w8"  # ~2.7 s upstream
    client = redis.Redis.from_url(redis_process.url)
    with ThreadPoolExecutor(9) as pool:
        leading = pool.submit(_ask, a, prompt)
        lock = _until(
            lambda: next(client.scan_iter(match=f"promptcache:{LOCK_INFIX}*"), None),
            "gateway a to take the lock",
        )
        following = [pool.submit(_ask, b, prompt) for _ in range(8)]
        # b's local leader is subscribed to the lock's channel: it follows a.
        _until(lambda: client.pubsub_numsub(lock)[0][1] == 1, "gateway b to follow")
        _until(lambda: upstream.calls_for(prompt) == 1, "gateway a's upstream call")
        a.process.send_signal(signal.SIGKILL)
        a.process.wait(timeout=10)
        answers = [future.result(timeout=_CLIENT_TIMEOUT) for future in following]
        with pytest.raises(openai.APIConnectionError):
            leading.result(timeout=_CLIENT_TIMEOUT)  # its gateway died under it
    client.close()

    assert {answer.text for answer in answers} == {"echo: w1 w2 w3 w4 w5 w6 w7 w8"}
    assert sorted(answer.status for answer in answers) == ["HIT"] * 7 + ["MISS"]
    assert upstream.calls_for(prompt) == 2  # the dead leader's, and the one that took over
    counts = b.cross_process()
    assert counts["takeovers"] == 1 and counts["leads"] == 1 and counts["follows"] == 0


def test_with_redis_stopped_requests_still_succeed(
    gateways: tuple[Gateway, Gateway], upstream: Upstream, redis_process: RedisProcess
) -> None:
    a, b = gateways
    redis_process.kill()
    prompt = "redis is down"
    answers = _burst(_ask, [a, b] * 4, prompt)

    assert {answer.text for answer in answers} == {"echo: redis is down"}
    # Each gateway still coalesces its own requests: one upstream call per gateway at most.
    assert 1 <= upstream.calls_for(prompt) <= 2
    assert all(gateway.cross_process()["unavailable"] >= 1 for gateway in gateways)
    streamed = _ask_streaming(b, prompt)
    assert streamed.text == "echo: redis is down"
