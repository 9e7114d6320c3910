"""The automatic checkpoint planner (--auto-cache)."""

from __future__ import annotations

import logging

import pytest

from promptcache.checkpoints import AutoCacheConfig, plan_checkpoints
from promptcache.errors import RequestError
from promptcache.request import Breakpoint, CacheControl, ChatRequest, Message, TextBlock, Tool


def conversation(
    turns: int = 3, *, system: bool = True, tools: bool = True, marks: dict[int, str] | None = None
) -> ChatRequest:
    marks = marks or {}
    messages = tuple(
        Message(
            role="user" if i % 2 == 0 else "assistant",
            content=(
                TextBlock(
                    text=f"turn {i}",
                    cache_control=CacheControl(ttl=marks[i]) if i in marks else None,  # type: ignore[arg-type]
                ),
            ),
        )
        for i in range(turns)
    )
    return ChatRequest(
        model="m",
        messages=messages,
        system=(TextBlock(text="a"), TextBlock(text="b")) if system else (),
        tools=(Tool(name="t1"), Tool(name="t2")) if tools else (),
    )


def places(request: ChatRequest) -> list[tuple[str, int | None, int, str]]:
    return [(p.section, p.message, p.block, p.ttl) for p in request.breakpoints()]


def test_marks_tools_system_and_last_message() -> None:
    planned = plan_checkpoints(conversation(), AutoCacheConfig())
    assert places(planned) == [
        ("tools", None, 1, "5m"),
        ("system", None, 1, "5m"),
        ("messages", 2, 0, "5m"),
    ]


def test_skips_empty_sections_and_uses_the_configured_ttl() -> None:
    planned = plan_checkpoints(conversation(system=False, tools=False), AutoCacheConfig(ttl="1h"))
    assert places(planned) == [("messages", 2, 0, "1h")]


def test_explicit_breakpoints_are_kept_and_the_limit_respected() -> None:
    request = conversation(6, tools=True, marks={0: "5m", 1: "5m", 2: "5m"})
    planned = plan_checkpoints(request, AutoCacheConfig())
    points = planned.breakpoints()
    assert len(points) == 4
    # The last message (the most valuable slot) was added; the explicit ones are untouched.
    assert Breakpoint(section="messages", message=5, block=0, ttl="5m") in points
    assert [p.message for p in points if p.section == "messages"] == [0, 1, 2, 5]


def test_ttl_order_is_never_broken() -> None:
    # An explicit 1h on the last message: 5m checkpoints before it would be invalid.
    request = conversation(marks={2: "1h"})
    assert places(plan_checkpoints(request, AutoCacheConfig(ttl="5m"))) == [
        ("messages", 2, 0, "1h")
    ]
    # An explicit 5m early on: a 1h checkpoint after it is placed as 5m.
    request = conversation(4, system=False, tools=False, marks={0: "5m"})
    assert places(plan_checkpoints(request, AutoCacheConfig(ttl="1h"))) == [
        ("messages", 0, 0, "5m"),
        ("messages", 3, 0, "5m"),
    ]


def test_min_messages_to_cache() -> None:
    request = conversation(2)
    assert plan_checkpoints(request, AutoCacheConfig(min_messages_to_cache=3)) is request
    assert plan_checkpoints(request, AutoCacheConfig(min_messages_to_cache=2)) is not request


def test_unsupported_model_behaviour(caplog: pytest.LogCaptureFixture) -> None:
    request = conversation()
    ignore = AutoCacheConfig(unsupported_model_behavior="ignore")
    assert plan_checkpoints(request, ignore, model_supports_caching=False) is request
    with caplog.at_level(logging.WARNING):
        warn = AutoCacheConfig(unsupported_model_behavior="warn")
        assert plan_checkpoints(request, warn, model_supports_caching=False) is request
    assert "does not support prompt caching" in caplog.text
    with pytest.raises(RequestError):
        plan_checkpoints(
            request,
            AutoCacheConfig(unsupported_model_behavior="raise"),
            model_supports_caching=False,
        )


@pytest.mark.parametrize(
    "options",
    [{"ttl": "2h"}, {"min_messages_to_cache": -1}, {"unsupported_model_behavior": "explode"}],
)
def test_config_is_validated(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AutoCacheConfig(**options)  # type: ignore[arg-type]
