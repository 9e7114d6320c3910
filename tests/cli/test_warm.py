"""``promptcache serve --warm FILE``: prefixes pinned before the server listens (tiny model,
no socket); a bad line stops the start, naming its line, and never shows a key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from promptcache.cli import app
from promptcache.cli import serve as serve_module
from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.threaded import ThreadedEngine
from promptcache.prefix.cache import PrefixCacheConfig
from tests.tiny_models import build_tiny_model

MODEL = "tiny-llama"
DOCUMENT = " ".join(f"Clause {i} says {i * 7 % 13}." for i in range(20))
CONFIG = PrefixCacheConfig(block_size=4, min_cache_tokens=16, kv_cache_bytes=8 << 20)
SECRET_A, SECRET_B = "warm-key-alpha-123", "warm-key-beta-456"


@pytest.fixture(scope="module")
def loaded() -> Any:
    return build_tiny_model()


@pytest.fixture
def served(loaded: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """``serve`` on a tiny local engine, recording the app instead of listening."""
    seen: dict[str, Any] = {}

    def build_engine(choice: Any) -> tuple[ThreadedEngine, str]:
        local = LocalEngine(LocalEngineConfig(prefix_cache=CONFIG), loaded=loaded)
        seen["engine"] = ThreadedEngine(local, max_queue=4)
        return seen["engine"], "tiny engine"

    def run(server: Any) -> None:
        seen["app"] = server.config.app
        if "while_serving" in seen:  # what a client would do while the server runs
            seen["answer"] = seen["while_serving"](server.config.app)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serve_module, "_build_engine", build_engine)
    monkeypatch.setattr(serve_module._Server, "run", run)
    for name in ("PROMPTCACHE_ADMIN_KEYS", "PROMPTCACHE_API_KEYS", "PROMPTCACHE_METRICS_KEY"):
        monkeypatch.delenv(name, raising=False)
    return seen


def write_lines(path: Path, *lines: Any) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return path


def openai_line(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "system", "content": DOCUMENT}, {"role": "user", "content": "Read."}],
        "ttl": "1h",
        **extra,
    }


def anthropic_line(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "system": DOCUMENT + " Second.", "name": "second", **extra}


def invoke(*options: str) -> Any:
    return CliRunner().invoke(app, ["serve", "--store", "memory://", *options])


def pinned_for(seen: dict[str, Any], key: str | None) -> list[Any]:
    flow = seen["app"].state.flow
    tenant = "" if key is None else flow.keyring.tenant({"x-api-key": key})
    registry = seen["engine"].named_prefixes
    assert registry is not None
    return list(registry.list(tenant))


def test_warm_pins_each_line_for_its_tenant(served: dict[str, Any], tmp_path: Path) -> None:
    warm = write_lines(
        tmp_path / "warm.jsonl",
        openai_line(api_key=SECRET_A),
        "",
        anthropic_line(api_key=SECRET_B, ttl=600),
    )
    result = invoke("--api-key", SECRET_A, "--api-key", SECRET_B, "--warm", str(warm))
    assert result.exit_code == 0, result.output
    assert "Pinned 2 prefixes" in result.output
    assert SECRET_A not in result.output and SECRET_B not in result.output
    (mine,) = pinned_for(served, SECRET_A)
    (theirs,) = pinned_for(served, SECRET_B)
    assert mine.ttl_seconds == 3600 and theirs.ttl_seconds == 600 and theirs.name == "second"
    assert mine.cached_tokens > 0 and theirs.cached_tokens > 0


def test_a_warmed_prefix_is_read_by_the_first_request(
    served: dict[str, Any], tmp_path: Path
) -> None:
    warm = write_lines(tmp_path / "warm.jsonl", openai_line())
    body = openai_line(max_tokens=2)
    del body["ttl"]
    body["messages"] += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "3?"}]

    async def ask(served_app: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=served_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/v1/chat/completions", json=body)

    served["while_serving"] = lambda served_app: asyncio.run(ask(served_app))
    result = invoke("--warm", str(warm))
    assert result.exit_code == 0, result.output
    (prefix,) = pinned_for(served, None)
    answer = served["answer"]
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == prefix.cached_tokens


@pytest.mark.parametrize(
    ("lines", "keys", "words"),
    [
        ((openai_line(), "{not json"), (), "warm.jsonl:2: not a JSON object"),
        (("[1, 2]",), (), "warm.jsonl:1: not a JSON object"),
        ((openai_line(), openai_line(ttl="soon")), (), "warm.jsonl:2: ttl must be"),
        ((openai_line(temperature=0),), (), "warm.jsonl:1: 'temperature' is not accepted"),
        ((openai_line(model="gpt-4o"),), (), "warm.jsonl:1: The model 'gpt-4o' does not exist"),
        ((openai_line(),), (SECRET_A,), "warm.jsonl:1: this server has API keys"),
        ((openai_line(api_key="not-a-key-789"),), (SECRET_A,), "is not one of this server"),
        ((openai_line(api_key=SECRET_A),), (), "this server has no API keys"),
        (
            (openai_line(), {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
            (),
            "warm.jsonl:2: The prefix is",
        ),
    ],
)
def test_a_bad_line_stops_the_start_and_names_its_line(
    served: dict[str, Any],
    tmp_path: Path,
    lines: tuple[Any, ...],
    keys: tuple[str, ...],
    words: str,
) -> None:
    warm = write_lines(tmp_path / "warm.jsonl", *lines)
    options = [option for key in keys for option in ("--api-key", key)]
    result = invoke(*options, "--warm", str(warm))
    assert result.exit_code == 2
    assert words in " ".join(result.output.split())
    assert "not-a-key-789" not in result.output
    assert "app" not in served  # never served


def test_an_engine_without_a_kv_cache_refuses_warm(
    captured: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    warm = write_lines(tmp_path / "warm.jsonl", openai_line(model="fake-model"))
    result = invoke("--warm", str(warm))
    assert result.exit_code == 2
    assert "KV prefix cache" in " ".join(result.output.split())


def test_a_missing_file_is_named(served: dict[str, Any], tmp_path: Path) -> None:
    result = invoke("--warm", str(tmp_path / "absent.jsonl"))
    assert result.exit_code == 2 and "absent.jsonl" in result.output
