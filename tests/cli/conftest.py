"""Shared CLI fixtures: ``captured`` runs ``promptcache serve`` without a model or a socket."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.cli import serve as serve_module
from promptcache.engine.threaded import ThreadedEngine
from tests.server.fakes import FakeSyncEngine


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs ``serve`` without a model or a socket: records the app it would serve."""
    seen: dict[str, Any] = {}

    def build_engine(choice: Any) -> tuple[ThreadedEngine, str]:
        seen["choice"] = choice
        return ThreadedEngine(FakeSyncEngine(), max_queue=choice.max_queue), "fake engine"

    def run(server: Any) -> None:
        seen["app"] = server.config.app
        seen["uvicorn"] = server.config
        server._banner()

    monkeypatch.setattr(serve_module, "_build_engine", build_engine)
    monkeypatch.setattr(serve_module._Server, "run", run)
    monkeypatch.delenv("PROMPTCACHE_ADMIN_KEYS", raising=False)
    monkeypatch.delenv("PROMPTCACHE_API_KEYS", raising=False)
    monkeypatch.delenv("PROMPTCACHE_METRICS_KEY", raising=False)
    return seen
