"""A scripted SyncEngine for fast server tests (no model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from promptcache.engine.base import ModelInfo, PrefixCacheSnapshot
from promptcache.errors import RequestError
from promptcache.request import ChatRequest
from promptcache.result import Choice, PromptUsage, Result, TextDelta, Usage

FAKE_MODEL = "fake-model"


class FakeSyncEngine:
    """Answers ``echo: <last user text>`` word by word.

    ``gate``: when set to an unset Event, generation waits on it after the
    first token (lets tests hold a request "in the engine"). A last message of
    ``"fail"`` raises a RequestError before any output.
    """

    def __init__(self, *, token_delay: float = 0.0) -> None:
        self.token_delay = token_delay
        self.gate: threading.Event | None = None
        self.calls = 0
        self.cancelled = 0
        self.completed = 0
        self.cleared = 0
        self.requests: list[ChatRequest] = []
        self.started = threading.Event()
        self._lock = threading.Lock()

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=FAKE_MODEL, aliases=("fake",))]

    def prefix_stats(self) -> PrefixCacheSnapshot:
        return PrefixCacheSnapshot(tokens_queried=100, tokens_hit=40, kv_bytes_used=4096)

    def clear_prefix_cache(self) -> None:
        self.cleared += 1

    def generate(
        self, request: ChatRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[PromptUsage | TextDelta | Result]:
        with self._lock:
            self.calls += 1
            self.requests.append(request)
        self.started.set()
        last = request.messages[-1].text() if request.messages else ""
        if last == "fail":
            raise RequestError("the fake engine refuses this prompt", param="messages")
        prompt_tokens = sum(len(m.text().split()) for m in request.messages) + 10
        yield PromptUsage(usage=Usage(input_tokens=prompt_tokens))
        words = ["echo:", *last.split()][: request.sampling.max_tokens or 64]
        for i, word in enumerate(words):
            if i == 1 and self.gate is not None:
                while not self.gate.wait(0.01):
                    if cancel is not None and cancel.is_set():
                        break
            if cancel is not None and cancel.is_set():
                self.cancelled += 1
                return
            if self.token_delay:
                time.sleep(self.token_delay)
            yield TextDelta(choice_index=0, text=(" " if i else "") + word)
        self.completed += 1
        yield Result(
            id=f"fake-{self.calls}",
            model=request.model,
            created=1_700_000_000,
            choices=(Choice(text=" ".join(words), finish_reason="stop"),),
            usage=Usage(input_tokens=prompt_tokens, output_tokens=len(words)),
        )
