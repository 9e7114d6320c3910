"""Model aliases through the real clients on the embedded model: code written for a
provider keeps its model name and only its base URL changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.live import live_server

pytestmark = pytest.mark.model

SERVED = "SmolLM2-135M-Instruct"
NAMED = {"glm-4.6": SERVED, "anthropic/claude-3.7-sonnet": SERVED, "gpt-4o-mini": SERVED}


@pytest.fixture(scope="module")
def engine(local_engine: Any) -> Iterator[ThreadedEngine]:
    threaded = ThreadedEngine(local_engine, max_queue=8, workers=1)
    yield threaded
    asyncio.run(threaded.aclose())


@pytest.fixture(scope="module")
def named(engine: ThreadedEngine) -> Iterator[str]:
    """A server answering three aliases (and the served name), nothing else."""
    app = create_app(
        ServerConfig(model_aliases=NAMED),
        engine=engine,
        cache=ResponseCache(open_store("memory://")),
    )
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def wildcard(engine: ThreadedEngine) -> Iterator[str]:
    """``--model-alias '*=SmolLM2-135M-Instruct'``: every name is the served model."""
    app = create_app(
        ServerConfig(model_aliases={"*": SERVED}),
        engine=engine,
        cache=ResponseCache(open_store("memory://")),
    )
    with live_server(app) as url:
        yield url


def test_langchain_chat_openai_with_its_default_model(wildcard: str) -> None:
    llm = ChatOpenAI(base_url=f"{wildcard}/v1", api_key=SecretStr("unused"), max_tokens=8)  # type: ignore[call-arg]
    assert llm.model_name == "gpt-3.5-turbo"  # langchain-openai's default
    message = llm.invoke("Say hello.")
    assert message.content
    assert message.response_metadata["model_name"] == "gpt-3.5-turbo"


def test_anthropic_sdk_with_a_provider_model_name(named: str) -> None:
    client = anthropic.Anthropic(base_url=named, api_key="unused")
    message = client.messages.create(
        model="anthropic/claude-3.7-sonnet",
        max_tokens=8,
        messages=[{"role": "user", "content": "Name a fruit."}],
    )
    assert message.model == "anthropic/claude-3.7-sonnet"
    assert message.content[0].text  # type: ignore[union-attr]


def test_two_aliases_share_one_entry_and_each_sees_its_own_name(named: str) -> None:
    client = openai.OpenAI(base_url=f"{named}/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": "What colour is grass?"}]
    first = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, max_tokens=8
    )
    second = client.chat.completions.with_raw_response.create(
        model="glm-4.6", messages=messages, max_tokens=8
    )
    served = client.chat.completions.with_raw_response.create(
        model=SERVED, messages=messages, max_tokens=8
    )
    assert first.headers["x-promptcache"] == "MISS"
    assert second.headers["x-promptcache"] == served.headers["x-promptcache"] == "HIT"
    assert second.headers["x-promptcache-key"] == first.headers["x-promptcache-key"]
    one, two, three = first.parse(), second.parse(), served.parse()
    assert (one.model, two.model, three.model) == ("gpt-4o-mini", "glm-4.6", SERVED)
    assert two.choices[0].message.content == one.choices[0].message.content


def test_an_unknown_name_is_still_a_404(named: str) -> None:
    client = openai.OpenAI(base_url=f"{named}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    assert caught.value.code == "model_not_found"


def test_v1_models_lists_the_aliases(named: str) -> None:
    ids = [m.id for m in openai.OpenAI(base_url=f"{named}/v1", api_key="unused").models.list()]
    assert ids[0] == SERVED
    assert set(NAMED) <= set(ids)
    anthropic_ids = [
        m["id"]
        for m in httpx.get(
            f"{named}/v1/models", headers={"anthropic-version": "2023-06-01"}
        ).json()["data"]
    ]
    assert set(NAMED) <= set(anthropic_ids)
