"""Rendering canonical requests: canonical order, tool text, breakpoint token positions."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.engine.local.prompt import (
    TOOLS_HEADER,
    ChatRenderer,
    RenderedPrompt,
    tokens_ending_by,
)
from promptcache.errors import RequestError
from promptcache.request import (
    CacheControl,
    ChatRequest,
    ImageBlock,
    Message,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)

FIVE = CacheControl(ttl="5m")
HOUR = CacheControl(ttl="1h")


@pytest.fixture
def renderer(tiny_model: Any) -> ChatRenderer:
    return ChatRenderer(tiny_model.tokenizer)


@pytest.fixture
def tokenizer(tiny_model: Any) -> Any:
    return tiny_model.tokenizer


def user(*blocks: TextBlock | ToolResultBlock | ImageBlock) -> Message:
    return Message(role="user", content=blocks)


def text(value: str, cache: CacheControl | None = None) -> TextBlock:
    return TextBlock(text=value, cache_control=cache)


def offsets(tokenizer: Any, prompt: RenderedPrompt) -> list[tuple[int, int]]:
    encoding = tokenizer(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
    return [(int(s), int(e)) for s, e in encoding["offset_mapping"]]


def assert_breakpoint_at(
    tokenizer: Any, prompt: RenderedPrompt, position: int, block_text: str
) -> None:
    """The straddling rule, checked from the outside: every token before ``position``
    ends at or before the block's end; the token at ``position`` ends after it."""
    char_end = prompt.text.index(block_text) + len(block_text)
    spans = offsets(tokenizer, prompt)
    assert all(end <= char_end for _, end in spans[:position])
    if position < len(spans):
        assert spans[position][1] > char_end


def test_token_ids_are_the_tokenized_text(renderer: ChatRenderer, tokenizer: Any) -> None:
    prompt = renderer.render(ChatRequest(model="m", messages=(user(text("Hello there")),)))
    assert "Hello there" in prompt.text
    ids = tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    assert list(prompt.token_ids) == list(ids)
    assert prompt.breakpoint_positions == ()


def test_canonical_order_tools_then_system_then_messages(renderer: ChatRenderer) -> None:
    request = ChatRequest(
        model="m",
        tools=(Tool(name="lookup", description="Find a fact", input_schema={"type": "object"}),),
        system=(text("SYSTEM-PROMPT"),),
        messages=(user(text("USER-QUESTION")),),
    )
    rendered = renderer.render(request).text
    tools_at = rendered.index(TOOLS_HEADER)
    assert tools_at < rendered.index('"name": "lookup"') < rendered.index("SYSTEM-PROMPT")
    assert rendered.index("SYSTEM-PROMPT") < rendered.index("USER-QUESTION")
    assert '"input_schema": {"type": "object"}' in rendered


def test_rendering_is_deterministic_without_system(renderer: ChatRenderer) -> None:
    request = ChatRequest(model="m", messages=(user(text("same")),))
    assert renderer.render(request) == renderer.render(request)


def test_breakpoints_map_to_block_ends(renderer: ChatRenderer, tokenizer: Any) -> None:
    request = ChatRequest(
        model="m",
        tools=(
            Tool(name="alpha", description="first tool", cache_control=HOUR),
            Tool(name="beta", description="second tool"),
        ),
        system=(text("Be brief and exact.", FIVE), text("Another system line.")),
        messages=(
            user(text("What is the capital of France?", FIVE), text("Answer in one word.")),
            Message(role="assistant", content=(text("Paris"),)),
            user(text("And of Italy?", FIVE)),
        ),
    )
    prompt = renderer.render(request)
    positions = [p for p, _ in prompt.breakpoint_positions]
    assert [t for _, t in prompt.breakpoint_positions] == ["1h", "5m", "5m", "5m"]
    assert positions == sorted(positions)
    assert len(set(positions)) == 4
    assert_breakpoint_at(
        tokenizer, prompt, positions[0], '"description": "first tool", "input_schema": {}}'
    )
    assert_breakpoint_at(tokenizer, prompt, positions[1], "Be brief and exact.")
    assert_breakpoint_at(tokenizer, prompt, positions[2], "What is the capital of France?")
    assert_breakpoint_at(tokenizer, prompt, positions[3], "And of Italy?")


def test_prefix_up_to_a_breakpoint_is_stable_when_more_follows(renderer: ChatRenderer) -> None:
    short = ChatRequest(
        model="m", system=(text("Long shared instructions.", FIVE),), messages=(user(text("A")),)
    )
    longer = ChatRequest(
        model="m",
        system=(text("Long shared instructions.", FIVE), text("Extra system text.")),
        messages=(
            user(text("B")),
            Message(role="assistant", content=(text("C"),)),
            user(text("D")),
        ),
    )
    a, b = renderer.render(short), renderer.render(longer)
    (pa, _), (pb, _) = a.breakpoint_positions[0], b.breakpoint_positions[0]
    assert pa == pb
    assert a.token_ids[:pa] == b.token_ids[:pb]


def test_straddling_token_belongs_after_the_breakpoint() -> None:
    spans = [(0, 3), (3, 7), (7, 9)]
    assert tokens_ending_by(spans, 7) == 2  # boundary on a token edge
    assert tokens_ending_by(spans, 5) == 1  # (3, 7) straddles 5: after
    assert tokens_ending_by(spans, 9) == 3
    assert tokens_ending_by(spans, 0) == 0
    # zero-width (whitespace-trimmed) token at the boundary counts after it
    assert tokens_ending_by([(0, 3), (3, 3), (3, 5)], 3) == 1


def test_straddling_in_a_real_prompt(embedded_model: Any) -> None:
    # SmolLM2's BPE merges a block's trailing whitespace with the separator
    # and the next block's leading whitespace into one token across the end.
    tokenizer = embedded_model.tokenizer
    renderer = ChatRenderer(tokenizer)
    straddled = 0
    for ending, following in [("a ", "\n"), ("a\n", "\n"), ("a ", " b"), ("a\r\n", " ")]:
        block = "ends in whitespace " + ending
        request = ChatRequest(model="m", messages=(user(text(block, FIVE), text(following)),))
        prompt = renderer.render(request)
        ((position, _),) = prompt.breakpoint_positions
        char_end = prompt.text.index(block) + len(block)
        spans = offsets(tokenizer, prompt)
        assert all(end <= char_end for _, end in spans[:position])
        start, end = spans[position]
        assert end > char_end
        straddled += start < char_end
    assert straddled > 0, "no case exercised a token straddling the boundary"


def test_tool_use_and_tool_result_render_as_text(renderer: ChatRenderer) -> None:
    request = ChatRequest(
        model="m",
        tools=(Tool(name="weather", input_schema={"type": "object"}),),
        messages=(
            user(text("Weather in Paris?")),
            Message(
                role="assistant",
                content=(ToolUseBlock(id="call_1", name="weather", input={"city": "Paris"}),),
            ),
            user(
                ToolResultBlock(tool_use_id="call_1", content=(text("sunny, 21C"),)),
                ToolResultBlock(tool_use_id="call_2", content=(text("boom"),), is_error=True),
            ),
        ),
    )
    rendered = renderer.render(request).text
    call = '<tool_call>{"id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}'
    assert call + "</tool_call>" in rendered
    assert '<tool_response tool_use_id="call_1">sunny, 21C</tool_response>' in rendered
    assert '<tool_response tool_use_id="call_2" is_error="true">boom</tool_response>' in rendered


def test_breakpoint_on_a_tool_result(renderer: ChatRenderer, tokenizer: Any) -> None:
    result = ToolResultBlock(tool_use_id="c9", content=(text("42"),), cache_control=FIVE)
    prompt = renderer.render(ChatRequest(model="m", messages=(user(result, text("thanks")),)))
    ((position, _),) = prompt.breakpoint_positions
    assert_breakpoint_at(
        tokenizer, prompt, position, '<tool_response tool_use_id="c9">42</tool_response>'
    )


def test_images_are_rejected(renderer: ChatRenderer) -> None:
    image = ImageBlock(source={"type": "url", "url": "https://example.com/cat.png"})
    with pytest.raises(RequestError, match="text-only") as info:
        renderer.render(ChatRequest(model="m", messages=(user(text("look"), image),)))
    assert info.value.param == "messages.0.content.1"
    nested = ToolResultBlock(tool_use_id="x", content=(image,))
    with pytest.raises(RequestError, match="text-only"):
        renderer.render(ChatRequest(model="m", messages=(user(nested),)))


def test_too_many_breakpoints_and_ttl_order(renderer: ChatRenderer) -> None:
    # Refused when the request is built, so no invalid request ever reaches rendering.
    with pytest.raises(RequestError, match="maximum of 4"):
        renderer.render(
            ChatRequest(model="m", messages=(user(*(text(f"block {i}", FIVE) for i in range(5))),))
        )
    with pytest.raises(RequestError, match="1h"):
        renderer.render(
            ChatRequest(model="m", system=(text("a", FIVE),), messages=(user(text("b", HOUR)),))
        )


def test_empty_messages_are_rejected(renderer: ChatRenderer) -> None:
    with pytest.raises(RequestError):
        renderer.render(ChatRequest(model="m", messages=()))


def test_final_assistant_message_is_continued(renderer: ChatRenderer) -> None:
    request = ChatRequest(
        model="m",
        messages=(user(text("Count to three")), Message(role="assistant", content=(text("One,"),))),
    )
    assert renderer.render(request).text.endswith("One,")
