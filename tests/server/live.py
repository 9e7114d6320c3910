"""Run an app on uvicorn in a background thread, on 127.0.0.1 and a free port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from promptcache.engine.threaded import ThreadedEngine
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from tests.server.fakes import FakeSyncEngine


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:<port>``); stops the server on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def fake_upstream(token_delay: float) -> Iterator[tuple[str, FakeSyncEngine]]:
    """An OpenAI-compatible upstream (``<url>/v1``) answering ``echo: <prompt>`` at
    ``token_delay`` seconds a word, and the fake engine behind it (its calls counted)."""
    fake = FakeSyncEngine(token_delay=token_delay)
    engine = ThreadedEngine(fake, max_queue=64, workers=4)
    try:
        with live_server(create_app(ServerConfig(), engine=engine, cache=None)) as url:
            yield f"{url}/v1", fake
    finally:
        asyncio.run(engine.aclose())
