"""``ThreadedEngine.pin_prefix``: bounded, cancellable, and nothing left pinned for a caller
that went away (a gated fake engine, no model)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from promptcache.engine.threaded import ThreadedEngine
from promptcache.errors import InternalError, OverloadedError, RequestError
from promptcache.prefix.base import PrefixHold, new_match_key
from promptcache.prefix.named import NamedPrefixes, PinnedPrefix
from promptcache.request import ChatRequest, Message, TextBlock
from promptcache.result import ModelInfo, StreamEvent

REQUEST = ChatRequest(
    model="fake", messages=(Message(role="user", content=(TextBlock(text="x"),)),), tenant="t"
)


class StubCache:
    """What the registry needs of a prefix cache: releasing holds (recorded)."""

    def __init__(self) -> None:
        self.released: list[PrefixHold] = []

    def release_hold(self, hold: PrefixHold) -> None:
        self.released.append(hold)


class GatedPinner:
    """A sync engine whose pins wait for ``gate``, then pin whatever ``cancel`` says."""

    def __init__(self, *, fail: BaseException | None = None) -> None:
        self.cache = StubCache()
        self.registry = NamedPrefixes(self.cache)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.started = threading.Event()
        self.cancels: list[threading.Event] = []
        self.fail = fail

    @property
    def named_prefixes(self) -> NamedPrefixes:
        return self.registry

    def pin_prefix(
        self,
        request: ChatRequest,
        *,
        ttl_seconds: float,
        name: str | None,
        model: str,
        cancel: threading.Event,
    ) -> PinnedPrefix:
        self.cancels.append(cancel)
        self.started.set()
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        # Finishing although cancelled: the race the engine must clean up after.
        hold = PrefixHold(num_tokens=16, num_blocks=1, key=new_match_key())
        return self.registry.add(
            tenant=request.tenant, model=model, name=name, tokens=20, hold=hold, ttl_seconds=60
        )

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="fake")]

    def generate(self, request: ChatRequest, *, cancel: Any = None) -> Iterator[StreamEvent]:
        raise NotImplementedError

    def prefix_stats(self) -> None:
        return None

    def clear_prefix_cache(self) -> None:
        return None


async def pin(engine: ThreadedEngine) -> PinnedPrefix:
    return await engine.pin_prefix(REQUEST, ttl_seconds=60, name=None, model="fake")


async def test_at_most_workers_pins_at_once() -> None:
    pinner = GatedPinner()
    engine = ThreadedEngine(pinner, max_queue=4, workers=1)
    first = asyncio.ensure_future(pin(engine))
    await asyncio.to_thread(pinner.started.wait, 10)
    with pytest.raises(OverloadedError, match="at most 1 at once"):
        await pin(engine)
    pinner.gate.set()
    assert (await first).id.startswith("pfx_")
    assert (await pin(engine)).id.startswith("pfx_")  # room again once it finished
    await engine.aclose()


async def test_a_caller_that_goes_away_cancels_and_leaves_nothing_pinned() -> None:
    pinner = GatedPinner()
    engine = ThreadedEngine(pinner, max_queue=4, workers=1)
    task = asyncio.ensure_future(pin(engine))
    await asyncio.to_thread(pinner.started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pinner.cancels[0].is_set()
    pinner.gate.set()
    for _ in range(200):  # the worker finishes on its own time; the orphan is unpinned then
        if pinner.cache.released:
            break
        await asyncio.sleep(0.01)
    assert len(pinner.cache.released) == 1
    assert pinner.registry.list("t") == []
    await engine.aclose()


@pytest.mark.parametrize(
    ("fault", "expected"),
    [(RequestError("too short", param="messages"), RequestError), (KeyError("bug"), InternalError)],
)
async def test_faults_reach_the_caller_as_promptcache_errors(
    fault: BaseException, expected: type[Exception]
) -> None:
    pinner = GatedPinner(fail=fault)
    pinner.gate.set()
    engine = ThreadedEngine(pinner, max_queue=4, workers=1)
    for _ in range(2):  # the failed pin gave its place back: the second is no 429
        with pytest.raises(expected):
            await pin(engine)
    await engine.aclose()
