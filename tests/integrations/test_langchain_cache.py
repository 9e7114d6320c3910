"""``set_llm_cache(PromptCacheLangChainCache(...))`` with a chat model whose calls are counted."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumps, loads
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, Generation

from promptcache.integrations.langchain import (
    PromptCacheLangChainCache,
    decode_generations,
    encode_generations,
)
from promptcache.store import MemoryStore

COUNTING_MODEL = '''
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class CountingChatModel(BaseChatModel):
    """Answers with a fresh message each call and counts the calls."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.calls += 1
        message = AIMessage(
            content=f"answer #{self.calls} to {messages[-1].content}",
            id=f"msg-{self.calls}",
            response_metadata={"model_name": "counting", "finish_reason": "stop"},
            tool_calls=[{"name": "lookup", "args": {"q": "x", "n": [1, 2]}, "id": "call-1"}],
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
'''
namespace: dict[str, Any] = {}
exec(COUNTING_MODEL, namespace)  # one definition shared with the subprocess below
CountingChatModel: type[BaseChatModel] = namespace["CountingChatModel"]


def _same_message(a: BaseMessage, b: BaseMessage) -> bool:
    # LangChain itself adds usage_metadata.total_cost = 0 to every cache hit.
    return a.model_dump(exclude={"usage_metadata"}) == b.model_dump(exclude={"usage_metadata"})


@pytest.fixture
def restore_global_cache() -> Iterator[None]:
    previous = get_llm_cache()
    yield
    set_llm_cache(previous)


def test_second_identical_invoke_is_served_from_the_cache(
    tmp_path: Path, restore_global_cache: None
) -> None:
    set_llm_cache(PromptCacheLangChainCache(f"sqlite:///{tmp_path}/lc.db"))
    model: Any = CountingChatModel()
    first = model.invoke("What is the capital of France?")
    second = model.invoke("What is the capital of France?")
    assert model.calls == 1
    assert isinstance(second, AIMessage) and _same_message(first, second)
    other = model.invoke("Something else")
    assert model.calls == 2 and other.content.endswith("Something else")


async def test_async_invoke_is_served_from_the_cache(restore_global_cache: None) -> None:
    set_llm_cache(PromptCacheLangChainCache(MemoryStore()))
    model: Any = CountingChatModel()
    first = await model.ainvoke("hello")
    second = await model.ainvoke("hello")
    assert model.calls == 1 and _same_message(first, second)


def test_model_parameters_are_part_of_the_key(restore_global_cache: None) -> None:
    cache = PromptCacheLangChainCache(MemoryStore())
    set_llm_cache(cache)
    model: Any = CountingChatModel()
    model.invoke("hi")
    model.invoke("hi", stop=["END"])  # a different llm_string
    assert model.calls == 2
    cache.clear()
    model.invoke("hi")
    assert model.calls == 3


def test_hit_survives_a_process_restart(tmp_path: Path) -> None:
    script = COUNTING_MODEL + textwrap.dedent(
        """
        import json, sys
        from langchain_core.globals import set_llm_cache
        from promptcache.integrations.langchain import PromptCacheLangChainCache

        cache = PromptCacheLangChainCache(sys.argv[1])
        set_llm_cache(cache)
        model = CountingChatModel()
        message = model.invoke("Tell me a joke")
        cache.close()
        print(json.dumps({"calls": model.calls, "message": message.model_dump(
            exclude={"usage_metadata"})}))
        """
    )
    url = f"sqlite:///{tmp_path}/restart.db"
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script, url], capture_output=True, timeout=120, check=True
        )
        outputs.append(json.loads(done.stdout.decode().strip().splitlines()[-1]))
    assert [o["calls"] for o in outputs] == [1, 0]
    assert outputs[0]["message"] == outputs[1]["message"]


def test_namespaces_partition_one_store() -> None:
    store = MemoryStore()
    a = PromptCacheLangChainCache(store, namespace="a")
    b = PromptCacheLangChainCache(store, namespace="b")
    a.update("p", "llm", [Generation(text="from a")])
    assert b.lookup("p", "llm") is None
    assert a.lookup("p", "llm") == [Generation(text="from a")]


def test_values_round_trip_exactly_like_langchain_loads() -> None:
    generations = [
        ChatGeneration(
            message=AIMessage(
                content=[{"type": "text", "text": "multi"}, {"type": "text", "text": "part"}],
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                additional_kwargs={"refusal": None},
            ),
            generation_info={"finish_reason": "stop", "logprobs": None},
        ),
        Generation(text="plain", generation_info={"nested": {"a": [1, {"lc": 2}]}}),
        # User data that looks like a serialised message must stay plain data.
        Generation(
            text="escaped",
            generation_info={
                "fake": {
                    "lc": 1,
                    "type": "constructor",
                    "id": ["langchain", "schema", "messages", "AIMessage"],
                    "kwargs": {"content": "not a message"},
                }
            },
        ),
    ]
    encoded = encode_generations(generations)
    assert encoded.decode() == dumps(generations)
    assert (
        decode_generations(encoded)
        == loads(encoded.decode(), allowed_objects="core")
        == generations
    )


def test_unreadable_entry_is_a_miss() -> None:
    store = MemoryStore()
    cache = PromptCacheLangChainCache(store)
    cache.update("p", "llm", [Generation(text="x")])
    key = next(iter(store._slots))
    store.put(key, b"garbage")
    assert cache.lookup("p", "llm") is None


def test_generation_that_cannot_be_serialised_is_not_stored() -> None:
    store = MemoryStore()
    cache = PromptCacheLangChainCache(store)
    weird = ChatGeneration(message=AIMessage(content="x", additional_kwargs={"obj": object()}))
    cache.update("p", "llm", [weird])
    assert cache.lookup("p", "llm") is None
    assert store.stats().entries == 0
