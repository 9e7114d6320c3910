"""Helpers for the side-by-side benchmarks against peer servers (``vs_llamacpp.py``).

* :func:`running_server` -- one OpenAI-compatible server as a child process on
  127.0.0.1, in its own session, logging to a file; ready when a GET of its
  readiness path answers 200; stopped (SIGTERM, then SIGKILL) on the way out,
  even on an error or Ctrl-C.
* :func:`stream_chat` -- one streamed Chat Completion through the official
  ``openai`` SDK, timed: time to first token, time of the last token, and the
  completion tokens (the server's ``usage`` when it sends one, else the content
  chunks counted).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from _soak_procs import HOST, free_port, stop


@dataclass(frozen=True, kw_only=True)
class ServerCommand:
    """How to start one server: ``argv`` with ``{port}`` where the port goes."""

    label: str
    argv: list[str]
    ready_path: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    """Set in the server's environment, over this process's."""


@contextmanager
def running_server(command: ServerCommand, *, start_timeout: float) -> Iterator[str]:
    """Start ``command`` on a free loopback port; yield its base URL (``http://127.0.0.1:N``)."""
    port = free_port()
    argv = [part.replace("{port}", str(port)) for part in command.argv]
    command.log_path.parent.mkdir(parents=True, exist_ok=True)
    with command.log_path.open("wb") as log:
        # Its own session: a Ctrl-C at the terminal reaches this process, which stops it.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **command.env},
            start_new_session=True,
        )
        base = f"http://{HOST}:{port}"
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{command.label} exited with {proc.returncode} while starting:\n"
                        + log_tail(command.log_path)
                    )
                try:
                    if httpx.get(base + command.ready_path, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{command.label} was not ready within {start_timeout:.0f} s:\n"
                        + log_tail(command.log_path)
                    )
                time.sleep(0.25)
            yield base
        finally:
            stop(proc, timeout=15)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True, kw_only=True)
class StreamTiming:
    """One streamed completion: seconds from the request to its first and last token."""

    first_token_s: float
    last_token_s: float
    completion_tokens: int
    prompt_tokens: int | None
    cached_tokens: int | None
    text: str

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first over the time they took (prefill left out)."""
        span = self.last_token_s - self.first_token_s
        return (self.completion_tokens - 1) / span if span > 0 else 0.0


def stream_chat(
    client: openai.OpenAI,
    *,
    model: str,
    messages: list[ChatCompletionMessageParam],
    max_tokens: int,
) -> StreamTiming:
    """One greedy streamed Chat Completion, timed from just before the request is sent."""
    started = time.perf_counter()
    first = last = 0.0
    chunks = 0
    parts: list[str] = []
    usage: Any = None
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content = choice.delta.content if choice.delta is not None else None
            if content:
                now = time.perf_counter() - started
                first = first or now
                last = now
                chunks += 1
                parts.append(content)
    if not chunks:
        raise RuntimeError(f"{model}: the stream carried no content")
    tokens = int(usage.completion_tokens) if usage is not None else chunks
    details = getattr(usage, "prompt_tokens_details", None) if usage is not None else None
    return StreamTiming(
        first_token_s=first,
        last_token_s=last,
        completion_tokens=tokens,
        prompt_tokens=int(usage.prompt_tokens) if usage is not None else None,
        cached_tokens=getattr(details, "cached_tokens", None),
        text="".join(parts),
    )


def first_model(client: openai.OpenAI) -> str:
    """The id of the first model the server lists."""
    models = client.models.list().data
    if not models:
        raise RuntimeError("the server lists no model")
    return models[0].id
