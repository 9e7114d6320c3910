"""SIGTERM on a real ``promptcache serve`` process: readiness turns 503, requests in
flight finish, and the process exits within ``--shutdown-timeout``.

The server runs in front of a slow fake upstream (another app in this process), so
no model is loaded and a request can be held in flight for as long as the test needs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import openai_body
from tests.server.live import fake_upstream


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def slow_upstream() -> Iterator[str]:
    """An OpenAI-compatible upstream whose answers take about 1.5 s."""
    with fake_upstream(token_delay=0.5) as (url, _):
        yield url


def _start(upstream: str, port: int, tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).parent / "promptcache"), "serve",
        "--port", str(port),
        "--store", "memory://",
        "--upstream-url", upstream,
        "--upstream-model", "fake-model",
        *extra,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode() if process.stderr else "exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("promptcache serve did not start")


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_drains_requests_in_flight_then_exits(slow_upstream: str, tmp_path: Path) -> None:
    port = _free_port()
    process = _start(slow_upstream, port, tmp_path, "--shutdown-timeout", "10")
    base = f"http://127.0.0.1:{port}"
    answers: list[httpx.Response] = []
    try:
        in_flight = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{base}/v1/chat/completions", json=openai_body("a b"), timeout=30)
            )
        )
        in_flight.start()
        time.sleep(0.5)  # the request is now waiting on the upstream
        process.send_signal(signal.SIGTERM)
        in_flight.join(timeout=30)
        returncode = process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(answers) == 1
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["choices"][0]["message"]["content"] == "echo: a b"
    assert returncode == 0


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_gives_up_on_a_request_past_the_shutdown_timeout(
    slow_upstream: str, tmp_path: Path
) -> None:
    port = _free_port()
    process = _start(slow_upstream, port, tmp_path, "--shutdown-timeout", "1")
    base = f"http://127.0.0.1:{port}"
    long_prompt = " ".join(["w"] * 40)  # ~20 s upstream: far past the shutdown timeout
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(f"{base}/v1/chat/completions", json=openai_body(long_prompt), timeout=60)
        except httpx.HTTPError as exc:
            errors.append(exc)

    try:
        in_flight = threading.Thread(target=call)
        in_flight.start()
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        stopped_after = time.monotonic() - started
        in_flight.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # Bounded by --shutdown-timeout (1 s) plus the engine's bounded close, not the 20 s answer.
    assert stopped_after < 10
    assert not in_flight.is_alive()
