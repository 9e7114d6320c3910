"""Shared fixtures: a private ``redis-server`` per test; the Hypothesis profiles.

``redis_server`` yields the URL of a fresh server on a free 127.0.0.1 port
(no persistence, its own temporary directory) and stops it afterwards;
``redis_process`` yields the handle, for tests that kill and restart it.
Both skip, saying why, when the ``redis-server`` binary is missing.

Hypothesis profiles (``pytest --hypothesis-profile=NAME``):

* ``ci`` (the default): bounded examples, derandomized (the same examples on
  every run, no example database), no deadline -- deterministic, and quick
  enough on a 2-core runner.
* ``dev``: random examples, more of them, failures remembered in
  ``.hypothesis/`` (git-ignored) and replayed first.
* ``soak``: many random examples, for long hunting runs
  (``pytest tests/fuzz --hypothesis-profile=soak``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

_START_TIMEOUT = 10.0

# Fuzz examples are large (long strings, deep nesting) and some go over HTTP.
_FUZZ_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_FUZZ_HEALTH,
)
settings.register_profile(
    "dev", max_examples=300, deadline=None, suppress_health_check=_FUZZ_HEALTH
)
settings.register_profile(
    "soak", max_examples=20_000, deadline=None, suppress_health_check=_FUZZ_HEALTH
)
# The plugin's --hypothesis-profile flag, read after this file is imported, overrides this.
settings.load_profile("ci")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One ``redis-server`` on 127.0.0.1; ``kill``/``start`` keep the same port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None


@pytest.fixture
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisProcess(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_server(redis_process: RedisProcess) -> str:
    """The URL (``redis://127.0.0.1:<port>/0``) of a fresh private redis-server."""
    return redis_process.url
