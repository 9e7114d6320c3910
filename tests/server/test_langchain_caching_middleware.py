"""LangChain's ``AnthropicPromptCachingMiddleware`` against the real server on the embedded
model: ``create_agent`` with ``ChatAnthropic(base_url=...)``, a tool and ``MemorySaver``,
two turns in one thread. The middleware sends Anthropic's automatic caching (a top-level
``cache_control``) plus markers on the system prompt and the tools; turn 1 writes the
cache, turn 2 reads it, and the tool call round-trips through the local engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_anthropic import ChatAnthropic
from langchain_anthropic.middleware import AnthropicPromptCachingMiddleware
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import MemorySaver
from pydantic import SecretStr

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.live import live_server

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"
CALLS: list[str] = []


def long_system_prompt() -> str:
    """Well over 1,024 tokens: the minimum Anthropic caches."""
    lines = ["You are the weather desk of the harbor society. Follow these house rules."]
    for i in range(110):
        lines.append(f"House rule {i}: report the lantern reading {i * 7 + 3} before the tide.")
    return "\n".join(lines)


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    CALLS.append(city)
    return f"It is sunny and 21 degrees in {city}."


@wrap_model_call
def call_the_tool_once(
    request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
) -> ModelResponse:
    """The small model needs help choosing: force the tool on a user's turn, then no tool
    once its result is in (so every turn ends with a text answer)."""
    asked = isinstance(request.messages[-1], HumanMessage)
    choice = {"type": "tool", "name": "get_weather"} if asked else {"type": "none"}
    return handler(request.override(tool_choice=choice))


def token_details(message: AIMessage) -> dict[str, Any]:
    usage = message.usage_metadata
    return dict(usage.get("input_token_details") or {}) if usage is not None else {}


def written(details: Any) -> int:
    """Cache-creation tokens as LangChain reports them: ``cache_creation``, or -- when the
    response splits them by TTL, as Anthropic's (and promptcache's) ``usage.cache_creation``
    does -- the ``ephemeral_5m/1h_input_tokens`` keys, with ``cache_creation`` set to 0 by
    langchain-anthropic to avoid counting them twice."""
    keys = ("cache_creation", "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
    return sum(details.get(k) or 0 for k in keys)


@pytest.fixture(scope="module")
def base_url(local_engine: Any) -> Iterator[str]:
    engine = ThreadedEngine(local_engine, max_queue=16, workers=1)
    app = create_app(ServerConfig(), engine=engine, cache=ResponseCache(open_store("memory://")))
    try:
        with live_server(app) as url:
            yield url
    finally:
        asyncio.run(engine.aclose())


def test_prompt_caching_middleware_two_turns_write_then_read(base_url: str) -> None:
    model = ChatAnthropic(
        base_url=base_url,
        api_key=SecretStr("x"),
        model_name=MODEL,
        max_tokens_to_sample=64,
        temperature=0,
        timeout=None,
        stop=None,
    )
    agent = create_agent(
        model=model,
        system_prompt=long_system_prompt(),
        tools=[get_weather],
        middleware=[AnthropicPromptCachingMiddleware(ttl="5m"), call_the_tool_once],
        checkpointer=MemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": "weather-desk"}}
    CALLS.clear()

    first = agent.invoke({"messages": [HumanMessage("What is the weather in Paris?")]}, config)
    turn1 = [m for m in first["messages"] if isinstance(m, AIMessage)]
    assert turn1[0].tool_calls and turn1[0].tool_calls[0]["name"] == "get_weather"
    assert any(isinstance(m, ToolMessage) for m in first["messages"])
    assert CALLS, "the tool was never run"
    details1 = token_details(turn1[0])
    assert written(details1) > 0, turn1[0].usage_metadata
    assert details1["ephemeral_5m_input_tokens"] == written(details1)  # ttl="5m"

    second = agent.invoke({"messages": [HumanMessage("And in Lisbon?")]}, config)
    turn2 = [m for m in second["messages"] if isinstance(m, AIMessage)][len(turn1) :]
    assert turn2, "turn 2 produced no model message"
    details2 = token_details(turn2[0])
    assert details2.get("cache_read", 0) > 0, turn2[0].usage_metadata
    assert len(CALLS) == 2
    # The thread really carried turn 1: its tool call and result are in turn 2's history.
    assert len(second["messages"]) > len(first["messages"])
