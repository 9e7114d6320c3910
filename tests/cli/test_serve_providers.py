"""``promptcache serve --upstream-provider / --unsupported-model-behavior``: the profile
reaches the engine, the auto-cache planner and the price table; bad values stop the start."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from promptcache.cli import app
from promptcache.cli._serve_setup import EngineChoice, build_engine
from promptcache.engine.upstream import UpstreamEngine


def serve(*args: str) -> Any:
    return CliRunner().invoke(app, ["serve", "--store", "none", *args])


def test_the_url_names_the_provider(captured: dict[str, Any]) -> None:
    result = serve("--upstream-url", "https://api.deepseek.com")
    assert result.exit_code == 0, result.output
    choice = captured["choice"]
    assert (choice.upstream_provider, choice.upstream_dialect) == ("deepseek", "openai")
    assert choice.unsupported_model_behavior == "warn"
    supports = captured["app"].state.config.model_supports_caching
    assert supports("deepseek-chat") is False


def test_openrouter_auto_cache_marks_claude_only(captured: dict[str, Any]) -> None:
    result = serve(
        "--upstream-url",
        "https://openrouter.ai/api/v1",
        "--auto-cache",
        "--unsupported-model-behavior",
        "raise",
    )
    assert result.exit_code == 0, result.output
    config = captured["app"].state.config
    assert config.auto_cache.unsupported_model_behavior == "raise"
    assert config.model_supports_caching("anthropic/claude-sonnet-4.5") is True
    assert config.model_supports_caching("openai/gpt-4o") is False
    assert captured["choice"].unsupported_model_behavior == "raise"


def test_an_explicit_provider_for_a_self_hosted_engine(captured: dict[str, Any]) -> None:
    result = serve("--upstream-url", "http://10.0.0.5:8000/v1", "--upstream-provider", "sglang")
    assert result.exit_code == 0, result.output
    assert captured["choice"].upstream_provider == "sglang"


def test_the_local_engine_honours_every_marker(captured: dict[str, Any]) -> None:
    result = serve()
    assert result.exit_code == 0, result.output
    assert captured["app"].state.config.model_supports_caching is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--upstream-url", "http://x.test/v1", "--upstream-provider", "bedrock"], "valid: openai"),
        (["--upstream-provider", "vllm"], "give --upstream-url"),
        (["--unsupported-model-behavior", "shout"], "ignore, warn or raise"),
        (
            ["--upstream-url", "http://x.test", "--upstream-provider", "anthropic",
             "--upstream-dialect", "openai"],
            "speaks the anthropic API",
        ),
    ],
)  # fmt: skip
def test_bad_provider_options_stop_the_start(
    captured: dict[str, Any], args: list[str], says: str
) -> None:
    result = serve(*args)
    assert result.exit_code == 2
    assert says in re.sub(r"[\s│]+", " ", result.output)  # the words, unwrapped from the box
    assert "app" not in captured


def test_the_banner_names_the_provider_and_what_it_needs_for_cached_tokens() -> None:
    choice = EngineChoice(
        model=None,
        kv_cache_bytes=None,
        min_cache_tokens=1024,
        upstream_url="http://gpu-1:8000/v1",
        upstream_dialect="openai",
        upstream_provider="vllm",
        upstream_api_key=None,
        upstream_models=(),
        max_queue=4,
        workers=1,
    )
    engine, text = build_engine(choice, Console())
    assert isinstance(engine, UpstreamEngine) and engine.profile.name == "vllm"
    assert text == (
        "upstream vllm (openai API) at http://gpu-1:8000/v1 "
        "(cached tokens: start vLLM with --enable-prompt-tokens-details)"
    )
    asyncio.run(engine.aclose())
