"""The Bedrock Runtime API on the embedded model, driven by boto3 and langchain-aws.

boto3's ``bedrock-runtime`` client and LangChain's Bedrock chat models are
pointed at the server (``endpoint_url``, any credentials); the model id they
send (``us.anthropic.claude-sonnet-4-5-20250929-v1:0``, percent-encoded in
the path) is answered by the served model through ``--model-alias
'*=SmolLM2-135M-Instruct'`` (``ServerConfig.model_aliases``). Every scenario has its own long prefix
so the shared KV cache never makes one test depend on another.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.live import live_server
from tests.server.test_model_clients import long_prefix

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"
BEDROCK_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
KEY = "pc-bedrock-test-key"


def _serve(local_engine: Any, config: ServerConfig, alias: str = "*") -> Iterator[str]:
    # The usual local set-up: every model name (*) answered by the embedded model.
    config = replace(config, model_aliases={alias: MODEL})
    engine = ThreadedEngine(local_engine, max_queue=16, workers=2)
    cache = ResponseCache(open_store("memory://"))
    app = create_app(config, engine=engine, cache=cache)
    try:
        with live_server(app) as url:
            yield url
    finally:
        asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def base_url(local_engine: Any) -> Iterator[str]:
    yield from _serve(local_engine, ServerConfig())


def client(url: str, secret: str = "y") -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, read_timeout=300),
    )


def test_converse_caches_at_the_cache_point_then_reads(base_url: str) -> None:
    bedrock = client(base_url)
    system = [{"text": long_prefix("bedrock-converse")}, {"cachePoint": {"type": "default"}}]

    def ask(question: str) -> dict[str, Any]:
        answer: dict[str, Any] = bedrock.converse(
            modelId=BEDROCK_ID,
            system=system,
            messages=[{"role": "user", "content": [{"text": question}]}],
            inferenceConfig={"maxTokens": 8, "temperature": 0},
        )
        return answer

    first = ask("Which rule mentions the river?")
    second = ask("Summarise rule 3.")
    assert first["stopReason"] in ("end_turn", "max_tokens")
    assert first["output"]["message"]["role"] == "assistant"
    assert first["output"]["message"]["content"][0]["text"]
    usage = first["usage"]
    assert usage["cacheWriteInputTokens"] > 1024 and usage["cacheReadInputTokens"] == 0
    assert usage["cacheDetails"] == [{"ttl": "5m", "inputTokens": usage["cacheWriteInputTokens"]}]
    assert usage["totalTokens"] == (
        usage["inputTokens"] + usage["outputTokens"] + usage["cacheWriteInputTokens"]
    )
    assert second["usage"]["cacheReadInputTokens"] > 1024
    assert second["usage"]["cacheWriteInputTokens"] == 0
    assert first["metrics"]["latencyMs"] >= 0
    headers = first["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-promptcache"] == "MISS"
    again = ask("Which rule mentions the river?")
    assert again["ResponseMetadata"]["HTTPHeaders"]["x-promptcache"] == "HIT"
    assert again["output"] == first["output"] and again["usage"] == first["usage"]


def _converse_stream(bedrock: Any, question: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    response = bedrock.converse_stream(
        modelId=BEDROCK_ID,
        messages=[{"role": "user", "content": [{"text": question}]}],
        inferenceConfig={"maxTokens": 8},
    )
    return list(response["stream"]), response["ResponseMetadata"]["HTTPHeaders"]


def test_converse_stream_then_the_same_stream_from_the_response_cache(base_url: str) -> None:
    bedrock = client(base_url)
    events, headers = _converse_stream(bedrock, "Name a colour of the sea.")
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    assert "contentBlockDelta" in kinds and "contentBlockStop" in kinds
    text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e
    )
    metadata = events[-1]["metadata"]
    assert metadata["usage"]["outputTokens"] > 0 and metadata["metrics"]["latencyMs"] >= 0
    assert events[-2]["messageStop"]["stopReason"] in ("end_turn", "max_tokens")
    again, again_headers = _converse_stream(bedrock, "Name a colour of the sea.")
    assert again_headers["x-promptcache"] == "HIT"
    assert next(iter(again[0])) == "messageStart"
    again_text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in again if "contentBlockDelta" in e
    )
    assert again_text == text
    assert again[-1]["metadata"]["usage"] == metadata["usage"]


def test_invoke_model_anthropic_body(base_url: str) -> None:
    bedrock = client(base_url)
    system = [
        {
            "type": "text",
            "text": long_prefix("bedrock-invoke"),
            "cache_control": {"type": "ephemeral"},
        }
    ]
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 8,
        "system": system,
        "messages": [{"role": "user", "content": "Which rule mentions the forge?"}],
    }
    response = bedrock.invoke_model(modelId=BEDROCK_ID, body=json.dumps(body))
    answer = json.loads(response["body"].read())
    assert answer["model"] == BEDROCK_ID and answer["type"] == "message"
    assert answer["usage"]["cache_creation_input_tokens"] > 1024
    streamed = bedrock.invoke_model_with_response_stream(
        modelId=BEDROCK_ID,
        body=json.dumps({**body, "messages": [{"role": "user", "content": "Summarise rule 2."}]}),
    )
    chunks = [
        json.loads(base64.b64decode(base64.b64encode(e["chunk"]["bytes"])))
        for e in streamed["body"]
    ]
    kinds = [c["type"] for c in chunks]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert chunks[0]["message"]["model"] == BEDROCK_ID
    assert chunks[0]["message"]["usage"]["cache_read_input_tokens"] > 1024
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] > 0


@pytest.fixture(scope="module")
def strict_url(local_engine: Any) -> Iterator[str]:
    """A server answering only the Bedrock id (``--model-alias <id>=SmolLM2...``)."""
    yield from _serve(local_engine, ServerConfig(), alias=BEDROCK_ID)


def test_errors_are_bedrock_client_errors(strict_url: str) -> None:
    bedrock = client(strict_url)
    with pytest.raises(bedrock.exceptions.ValidationException) as invalid:
        bedrock.converse(
            modelId=BEDROCK_ID,
            messages=[
                {
                    "role": "user",
                    "content": [{"toolResult": {"toolUseId": "t9", "content": [{"text": "x"}]}}],
                }
            ],
        )
    assert "toolUseId" in invalid.value.response["Error"]["Message"]
    assert invalid.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.converse(
            modelId="amazon.nova-pro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )
    with pytest.raises(bedrock.exceptions.ValidationException, match="anthropic_version"):
        bedrock.invoke_model(modelId=BEDROCK_ID, body=json.dumps({"max_tokens": 1, "messages": []}))
    with pytest.raises(ClientError) as unknown_stream:
        bedrock.invoke_model_with_response_stream(modelId="nope", body=b"{}")
    assert unknown_stream.value.response["Error"]["Code"] in (
        "ResourceNotFoundException",
        "ValidationException",
    )


def test_hostile_bodies_on_bedrock_paths_are_never_a_500(base_url: str) -> None:
    path = f"{base_url}/model/{BEDROCK_ID.replace(':', '%3A')}/converse"
    for body, content_type, status in [
        (b"not json", "application/json", 400),
        (b"{}", "text/plain", 415),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (
            b'{"messages": [{"role": "user", "content": [{"text": "\\ud800"}]}]}',
            "application/json",
            400,
        ),
        (b'{"messages": 3}', "application/json", 400),
    ]:
        response = httpx.post(path, content=body, headers={"content-type": content_type})
        assert response.status_code == status, (body[:20], response.text)
        assert response.headers["x-amzn-errortype"] == "ValidationException"
        assert "message" in response.json()


@pytest.fixture(scope="module")
def keyed_url(local_engine: Any) -> Iterator[str]:
    yield from _serve(local_engine, ServerConfig(api_keys=(KEY,)))


def test_sigv4_with_keys_configured(keyed_url: str) -> None:
    messages = [{"role": "user", "content": [{"text": "Say hi."}]}]
    answer = client(keyed_url, secret=KEY).converse(
        modelId=BEDROCK_ID, messages=messages, inferenceConfig={"maxTokens": 2}
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "Hi."}],
    }
    invoked = client(keyed_url, secret=KEY).invoke_model(modelId=BEDROCK_ID, body=json.dumps(body))
    assert json.loads(invoked["body"].read())["type"] == "message"
    streamed = client(keyed_url, secret=KEY).converse_stream(
        modelId=BEDROCK_ID, messages=messages, inferenceConfig={"maxTokens": 2}
    )
    assert "metadata" in list(streamed["stream"])[-1]
    with pytest.raises(ClientError) as wrong:
        client(keyed_url, secret="not-the-key").converse(modelId=BEDROCK_ID, messages=messages)
    assert wrong.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert wrong.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unsigned = httpx.post(f"{keyed_url}/model/{BEDROCK_ID}/converse", json={"messages": messages})
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-errortype"] == "UnrecognizedClientException"


# -- LangChain's Bedrock prompt-caching agent ------------------------------------


def _agent_turns(model: Any, *, stream: bool = False) -> list[dict[str, int]]:
    """The guide's agent, two turns in one thread; each turn's summed cache figures."""
    from langchain.agents import create_agent
    from langchain_aws.middleware import BedrockPromptCachingMiddleware
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import MemorySaver

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        return f"It is always sunny in {city}."

    agent: Any = create_agent(
        model=model,
        system_prompt=long_prefix(f"weather-agent-{type(model).__name__}-{stream}"),
        tools=[get_weather],
        middleware=[BedrockPromptCachingMiddleware(ttl="5m")],
        checkpointer=MemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": f"miami-seattle-{stream}"}}
    turns: list[dict[str, int]] = []
    seen = 0
    for question in ("What is the weather in Miami?", "How about Seattle?"):
        turn = {"messages": [{"role": "user", "content": question}]}
        if stream:
            chunks = list(agent.stream(turn, config, stream_mode="messages"))
            assert chunks  # the model's tokens, as they came
            state = agent.get_state(config).values
        else:
            state = agent.invoke(turn, config)
        replies = [m for m in state["messages"][seen:] if isinstance(m, AIMessage)]
        seen = len(state["messages"])
        totals = {"cache_read": 0, "cache_creation": 0, "input_tokens": 0, "calls": len(replies)}
        for reply in replies:
            usage: Any = reply.usage_metadata or {}
            details = usage.get("input_token_details", {})
            totals["cache_read"] += details.get("cache_read", 0)
            # langchain-aws reports a write under its TTL key when Bedrock gives
            # cacheDetails (as here), leaving cache_creation 0 (bedrock_converse.py).
            totals["cache_creation"] += (
                details.get("cache_creation", 0)
                + details.get("ephemeral_5m_input_tokens", 0)
                + details.get("ephemeral_1h_input_tokens", 0)
            )
            totals["input_tokens"] += usage.get("input_tokens", 0)
        turns.append(totals)
    return turns


def test_langchain_bedrock_converse_prompt_caching_agent(base_url: str) -> None:
    from langchain_aws import ChatBedrockConverse

    model = ChatBedrockConverse(  # type: ignore[call-arg]
        model=BEDROCK_ID,
        endpoint_url=base_url,
        region_name="us-east-1",
        aws_access_key_id="x",  # type: ignore[arg-type]
        aws_secret_access_key="y",  # type: ignore[arg-type]
        max_tokens=24,
    )
    first, second = _agent_turns(model)
    print("ChatBedrockConverse agent turns:", first, second)
    assert first["cache_creation"] > 1024
    assert second["cache_read"] > 1024


def test_langchain_bedrock_invoke_prompt_caching_agent(base_url: str) -> None:
    from langchain_aws import ChatBedrock

    model = ChatBedrock(  # type: ignore[call-arg]
        model=BEDROCK_ID,
        endpoint_url=base_url,
        region_name="us-east-1",
        aws_access_key_id="x",  # type: ignore[arg-type]
        aws_secret_access_key="y",  # type: ignore[arg-type]
        model_kwargs={"max_tokens": 24},
    )
    first, second = _agent_turns(model)
    print("ChatBedrock agent turns:", first, second)
    assert first["cache_creation"] > 1024
    assert second["cache_read"] > 1024


@pytest.mark.parametrize("kind", ["ChatBedrockConverse", "ChatBedrock"])
def test_langchain_bedrock_prompt_caching_agent_streaming(base_url: str, kind: str) -> None:
    from langchain_aws import ChatBedrock, ChatBedrockConverse

    model: Any
    if kind == "ChatBedrockConverse":
        model = ChatBedrockConverse(  # type: ignore[call-arg]
            model=BEDROCK_ID,
            endpoint_url=base_url,
            region_name="us-east-1",
            aws_access_key_id="x",  # type: ignore[arg-type]
            aws_secret_access_key="y",  # type: ignore[arg-type]
            max_tokens=24,
        )
    else:
        model = ChatBedrock(  # type: ignore[call-arg]
            model=BEDROCK_ID,
            endpoint_url=base_url,
            region_name="us-east-1",
            aws_access_key_id="x",  # type: ignore[arg-type]
            aws_secret_access_key="y",  # type: ignore[arg-type]
            model_kwargs={"max_tokens": 24},
            streaming=True,
        )
    first, second = _agent_turns(model, stream=True)
    print(f"{kind} streaming agent turns:", first, second)
    assert first["cache_creation"] > 1024
    assert second["cache_read"] > 1024


WEATHER_TOOL = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            }
        },
    }
}


def test_converse_tool_use_and_tool_result_both_ways(base_url: str) -> None:
    bedrock = client(base_url)
    tool_config = {"tools": [WEATHER_TOOL], "toolChoice": {"tool": {"name": "get_weather"}}}
    question = {"role": "user", "content": [{"text": "What is the weather in Miami?"}]}
    first = bedrock.converse(
        modelId=BEDROCK_ID,
        messages=[question],
        toolConfig=tool_config,
        inferenceConfig={"maxTokens": 48},
    )
    assert first["stopReason"] == "tool_use"
    use = next(b["toolUse"] for b in first["output"]["message"]["content"] if "toolUse" in b)
    assert use["name"] == "get_weather" and isinstance(use["input"], dict)
    result = {
        "toolResult": {"toolUseId": use["toolUseId"], "content": [{"json": {"sky": "sunny"}}]}
    }
    answer = bedrock.converse(
        modelId=BEDROCK_ID,
        messages=[question, first["output"]["message"], {"role": "user", "content": [result]}],
        toolConfig={"tools": [WEATHER_TOOL]},
        inferenceConfig={"maxTokens": 8, "stopSequences": ["\n"]},
    )
    assert answer["stopReason"] in ("end_turn", "max_tokens", "stop_sequence", "tool_use")
    streamed = bedrock.converse_stream(
        modelId=BEDROCK_ID,
        messages=[question],
        toolConfig=tool_config,
        inferenceConfig={"maxTokens": 48},
    )
    events = list(streamed["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather"
    streamed_input = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e and "toolUse" in e["contentBlockDelta"]["delta"]
    )
    assert isinstance(json.loads(streamed_input), dict)
    assert next(e for e in events if "messageStop" in e)["messageStop"]["stopReason"] == "tool_use"


def test_one_request_by_converse_then_invoke_model_shares_the_entry(base_url: str) -> None:
    bedrock = client(base_url)
    question = "Name one planet of the solar system."
    converse = bedrock.converse(
        modelId=BEDROCK_ID,
        messages=[{"role": "user", "content": [{"text": question}]}],
        inferenceConfig={"maxTokens": 6},
    )
    again = bedrock.converse(
        modelId=BEDROCK_ID,
        messages=[{"role": "user", "content": [{"text": question}]}],
        inferenceConfig={"maxTokens": 6},
    )
    assert again["ResponseMetadata"]["HTTPHeaders"]["x-promptcache"] == "HIT"
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 6,
        "messages": [{"role": "user", "content": question}],
    }
    invoked = bedrock.invoke_model(modelId=BEDROCK_ID, body=json.dumps(body))
    assert invoked["ResponseMetadata"]["HTTPHeaders"]["x-promptcache"] == "HIT"
    answer = json.loads(invoked["body"].read())  # Anthropic's body, not Converse's
    assert answer["type"] == "message" and answer["model"] == BEDROCK_ID
    assert answer["content"][0]["text"] == converse["output"]["message"]["content"][0]["text"]
    headers = invoked["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-output-token-count"]) == converse["usage"]["outputTokens"]
