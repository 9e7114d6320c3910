"""The soak's child processes: ``promptcache serve`` and ``redis-server``, on 127.0.0.1.

Both are started in their own session (a Ctrl-C at the terminal reaches the
soak only, which then stops them in order) and registered in a
:class:`Children` set that kills whatever is still alive on the way out, even
when the soak is interrupted. Memory is sampled here too: RSS by polling
(psutil, a dependency of accelerate, else ``/proc``), and the kernel's
high-water mark ``VmHWM`` read just before a server is stopped, so a peak
between two samples is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

try:
    import psutil  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - psutil comes with accelerate
    psutil = None

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` now, or None once it is gone."""
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
    return _proc_status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's RSS high-water mark of ``pid`` (Linux), or None where unknown."""
    return _proc_status_bytes(pid, "VmHWM")


def reset_peak_rss(pid: int) -> bool:
    """Reset ``pid``'s ``VmHWM`` to its current RSS (Linux ``clear_refs`` 5); whether it could.

    Loading a model peaks above what serving it needs (float32 weights, packing
    temporaries, copies released once ready), and the high-water mark would carry
    that start-up peak into every later reading."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _proc_status_bytes(pid: int, field_name: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


class Children:
    """Every child process the soak started; :meth:`kill_all` leaves none behind."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closed = False

    def spawn(self, command: list[str], *, log: IO[bytes], cwd: Path) -> subprocess.Popen[bytes]:
        if self._closed:
            raise RuntimeError("interrupted: no new processes")
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill every child now and refuse new ones (an interrupted soak unwinds fast:
        requests to a dead server fail at once, a restart raises)."""
        self._closed = True
        self.kill_all()

    def kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._procs.clear()


def stop(proc: subprocess.Popen[bytes], *, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; True when SIGTERM alone stopped it."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return False


@dataclass(kw_only=True)
class MemoryRecord:
    """One server process's memory: RSS once ready (weights + runtime) and its peak."""

    label: str
    ready_rss: int
    peak_rss: int
    startup_peak_rss: int = 0
    """The high-water mark while loading, before ready (not counted against the budget
    where it could be reset; ``peak_rss`` includes it where not)."""


@dataclass(kw_only=True)
class Server:
    """One ``promptcache serve`` on a fixed port; :meth:`start` again after a kill restarts it."""

    children: Children
    workdir: Path
    port: int
    options: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    label: str = ""
    memory: list[MemoryRecord] = field(default_factory=list)
    generation: int = 0
    """Bumped on every (re)start: clients drop pooled connections to an older process."""
    epoch: int = 0
    """Bumped just before a deliberate kill or stop: a transport error in a request that
    started before it is a cut, not a server fault."""
    started_epoch: int = 0
    """``epoch`` when this process was started: a process gone at that epoch died by itself."""
    _current: MemoryRecord | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    async def start(self, label: str, *, timeout: float) -> float:
        """Start and wait for ``/healthz``; seconds it took. Raises RuntimeError on failure."""
        command = [
            sys.executable,
            "-c",
            "from promptcache.cli import main; main()",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.options,
        ]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n===== soak: start {label} =====\n".encode())
            log.flush()
            self.proc = self.children.spawn(command, log=log, cwd=self.workdir)
        self.label = label
        self.started_epoch = self.epoch
        deadline = started + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"promptcache serve exited with {self.proc.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.base_url + "/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"promptcache serve not ready within {timeout:.0f} s")
                await asyncio.sleep(0.2)
        self.generation += 1
        ready = rss_bytes(self.proc.pid) or 0
        startup = peak_rss_bytes(self.proc.pid) or ready
        peak = ready if reset_peak_rss(self.proc.pid) else max(ready, startup)
        self._current = MemoryRecord(
            label=label, ready_rss=ready, peak_rss=peak, startup_peak_rss=startup
        )
        self.memory.append(self._current)
        return time.monotonic() - started

    def sample_memory(self) -> None:
        pid = self.pid
        if pid is None or self._current is None:
            return
        now = max(rss_bytes(pid) or 0, peak_rss_bytes(pid) or 0)
        self._current.peak_rss = max(self._current.peak_rss, now)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        self.sample_memory()
        self.epoch += 1
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, *, timeout: float) -> bool:
        """Graceful SIGTERM (SIGKILL after ``timeout``); True when SIGTERM sufficed."""
        self.sample_memory()
        self.epoch += 1
        return True if self.proc is None else stop(self.proc, timeout=timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def redis_binary() -> str | None:
    found = shutil.which("redis-server")
    if found is None and os.access("/usr/bin/redis-server", os.X_OK):
        found = "/usr/bin/redis-server"
    return found


@dataclass(kw_only=True)
class Redis:
    """A private ``redis-server``: no persistence, its own directory, same port on restart."""

    children: Children
    binary: str
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def start(self, *, timeout: float = 10.0) -> None:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = self.children.spawn(command, log=log, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if await self._pong():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    async def _pong(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(16), 1.0)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
