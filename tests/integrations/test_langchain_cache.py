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
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumps, loads
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

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


# -- the fast writer is byte-for-byte LangChain's dumps --------------------------------

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
_user_key = st.sampled_from(["lc", "__lc_escaped__", "type", "id", "kwargs", "a"]) | st.text(
    max_size=4
)
_user_data = st.recursive(
    _scalar,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=2).map(tuple)
        | st.dictionaries(_user_key, children, max_size=3)
        | st.dictionaries(st.integers(0, 3), children, max_size=2)
    ),
    max_leaves=8,
)
_metadata = st.dictionaries(_user_key, _user_data, max_size=3)
_content = st.text(max_size=12) | st.lists(
    st.text(max_size=5) | st.fixed_dictionaries({"type": st.just("text"), "text": st.text()}),
    max_size=2,
)
_optional_str = st.none() | st.text(max_size=4)
_tool_call = st.fixed_dictionaries(
    {
        "name": st.text(max_size=5),
        "args": _metadata,
        "id": _optional_str,
        "type": st.just("tool_call"),
    }
)
_usage = st.none() | st.fixed_dictionaries(
    {
        "input_tokens": st.integers(0, 9),
        "output_tokens": st.integers(0, 9),
        "total_tokens": st.integers(0, 18),
    }
)
_common = {
    "content": _content,
    "additional_kwargs": _metadata,
    "response_metadata": _metadata,
    "name": _optional_str,
    "id": _optional_str,
}
_messages = st.one_of(
    st.builds(
        AIMessage, **_common, tool_calls=st.lists(_tool_call, max_size=2), usage_metadata=_usage
    ),
    st.builds(
        AIMessageChunk, **_common, usage_metadata=_usage, chunk_position=st.none() | st.just("last")
    ),
    st.builds(HumanMessage, **_common),
    st.builds(SystemMessage, **_common),
    st.builds(ChatMessage, **_common, role=st.text(max_size=4)),
    st.builds(FunctionMessage, **_common | {"name": st.text(max_size=4)}),
    st.builds(
        ToolMessage,
        **_common,
        tool_call_id=st.text(max_size=4),
        artifact=_user_data,
        status=st.sampled_from(["success", "error"]),
    ),
)
_generation_info = st.none() | _metadata
_generations = st.lists(
    st.one_of(
        st.builds(ChatGeneration, message=_messages, generation_info=_generation_info),
        st.builds(
            ChatGenerationChunk,
            message=_messages.filter(lambda m: isinstance(m, BaseMessageChunk)),
            generation_info=_generation_info,
        ),
        st.builds(Generation, text=st.text(max_size=8), generation_info=_generation_info),
        st.builds(GenerationChunk, text=st.text(max_size=8), generation_info=_generation_info),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(_generations)
def test_encoding_is_byte_for_byte_langchain_dumps(generations: list[Generation]) -> None:
    encoded = encode_generations(generations)
    assert encoded.decode() == dumps(generations)
    assert decode_generations(encoded) == loads(encoded.decode(), allowed_objects="core")


def test_encoding_writes_defaults_like_dumps() -> None:
    # Falsy values are written only when they differ from the field default.
    generations = [
        ChatGeneration(message=AIMessage(content="", name="", id=None), generation_info={}),
        Generation(text="", generation_info=None),
        ChatGeneration(message=ToolMessage(content=[], tool_call_id="", artifact=0)),
    ]
    assert encode_generations(generations).decode() == dumps(generations)


def test_classes_and_values_without_a_fast_path_go_through_dumps() -> None:
    class CustomMessage(AIMessage):
        pass

    for generations in (
        [ChatGeneration(message=CustomMessage(content="subclass"))],
        [Generation(text="t", generation_info={"key": {frozenset({1})}})],
    ):
        assert encode_generations(generations).decode() == dumps(generations)


def test_chat_model_generations_do_not_need_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    import promptcache.integrations.langchain._cache as module

    def no_dumps(*_: Any, **__: Any) -> str:
        raise AssertionError("took the general path")

    generations = [
        ChatGeneration(
            message=AIMessage(
                content="hi",
                id="run-1",
                response_metadata={"model_name": "m", "finish_reason": "stop"},
                tool_calls=[{"name": "f", "args": {"lc": 1}, "id": "c1", "type": "tool_call"}],
                usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            ),
            generation_info={"finish_reason": "stop"},
        )
    ]
    expected = dumps(generations)
    monkeypatch.setattr(module, "dumps", no_dumps)
    assert encode_generations(generations).decode() == expected


def test_classes_whose_to_json_does_more_are_left_to_it() -> None:
    from promptcache.integrations.langchain._cache import _class_plan

    class WithSecret(Generation):
        @property
        def lc_secrets(self) -> dict[str, str]:
            return {"text": "TEXT_SECRET"}

    class Hidden(Generation):
        pass

    # to_json writes getattr(self, "text"): here not the stored value.
    Hidden.text = property(lambda self: "not the stored one")  # type: ignore[assignment]

    class Plain(Generation):
        pass

    assert _class_plan(WithSecret) is None
    assert _class_plan(Hidden) is None
    assert _class_plan(Plain) is not None
    generations = [WithSecret(text="s3cret")]
    assert b"s3cret" not in encode_generations(generations)
    assert encode_generations(generations).decode() == dumps(generations)


def test_fast_writer_is_used_only_while_it_agrees_with_the_installed_dumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import promptcache.integrations.langchain._cache as module

    assert module._agrees_with_dumps()
    # e.g. a langchain-core that predates the escaping of user dicts holding "lc"
    monkeypatch.setattr(module, "dumps", lambda obj: dumps(obj).replace("__lc_escaped__", "x"))
    assert not module._agrees_with_dumps()
