"""ReplicaEngine on fake replicas: affinity, failover before the first event only,
passive ejection with backoff, health probes, the 503 when none is healthy, bound calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from promptcache.engine.base import Engine
from promptcache.engine.upstream.replicas import ReplicaConfig, ReplicaEngine
from promptcache.errors import (
    OverloadedError,
    RequestError,
    UpstreamError,
    UpstreamUnavailableError,
)
from promptcache.request import ChatRequest, Message, TextBlock
from promptcache.result import Choice, ModelInfo, Result, StreamEvent, TextDelta, Usage

URLS = ["http://10.9.0.1:8000/v1", "http://10.9.0.2:8000/v1", "http://10.9.0.3:8000/v1"]


class FakeReplica(Engine):
    """Answers with its own name; ``fail`` is raised before the first event, or after
    it when ``fail_midway``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fail: Exception | None = None
        self.fail_midway = False
        self.calls = 0
        self.bound: list[object] = []

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="m", owned_by=self.name)]

    def _result(self) -> Result:
        usage = Usage(input_tokens=10, cache_read_input_tokens=30, output_tokens=2)
        return Result(id="r", model="m", created=0, choices=(Choice(text=self.name),), usage=usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        if self.fail is not None and not self.fail_midway:
            raise self.fail
        yield TextDelta(choice_index=0, text=self.name)
        if self.fail is not None:
            raise self.fail
        yield self._result()

    async def complete(self, request: ChatRequest) -> Result:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self._result()

    def bind(self, call: object) -> Engine:
        self.bound.append(call)
        return self


def _fleet(**config: Any) -> tuple[ReplicaEngine, list[FakeReplica]]:
    fakes = [FakeReplica(f"r{i}") for i in range(len(URLS))]
    options: dict[str, Any] = {"health_interval": 0, **config}
    return ReplicaEngine(list(zip(URLS, fakes, strict=True)), ReplicaConfig(**options)), fakes


def _request(system: str, question: str = "q") -> ChatRequest:
    return ChatRequest(
        model="m",
        system=(TextBlock(text=system),),
        messages=(Message(role="user", content=(TextBlock(text=question),)),),
    )


async def _text(engine: Engine, request: ChatRequest) -> str:
    return "".join([e.text async for e in engine.stream(request) if isinstance(e, TextDelta)])


def _by_name(fakes: list[FakeReplica], text: str) -> FakeReplica:
    return next(f for f in fakes if f.name == text)


async def test_one_prefix_goes_to_one_replica_and_its_cached_share_is_counted() -> None:
    fleet, _ = _fleet()
    document = "Shared manual text. " * 400
    answers = {await _text(fleet, _request(document, f"question {i}")) for i in range(6)}
    assert len(answers) == 1
    route = fleet.route(_request(document, "another"))
    assert sorted(route) == ["10.9.0.1:8000", "10.9.0.2:8000", "10.9.0.3:8000"]
    assert f"r{int(route[0].split(':')[0][-1]) - 1}" in answers
    results = [await fleet.complete(_request(f"doc {i} " * 600)) for i in range(30)]
    spread = {result.choices[0].text for result in results}
    assert spread == {"r0", "r1", "r2"}
    stats = {r.replica: r for r in fleet.replica_stats().replicas}
    assert sum(r.requests for r in stats.values()) == 36
    assert all(r.cached_share == 0.75 for r in stats.values())


async def test_a_failed_replica_is_skipped_and_taken_out_with_backoff() -> None:
    now = [100.0]
    fleet, fakes = _fleet(base_backoff=2.0, max_backoff=8.0)
    fleet._clock = lambda: now[0]  # the test drives time
    request = _request("A document. " * 500)
    chosen = _by_name(fakes, await _text(fleet, request))
    chosen.fail = UpstreamError("The upstream could not be reached: refused")
    moved_to = await _text(fleet, request)
    assert moved_to != chosen.name
    snap = {r.replica: r for r in fleet.replica_stats().replicas}
    out = next(r for r in snap.values() if not r.healthy)
    assert out.errors == 1 and out.ejections == 1
    assert "could not" not in (out.last_error or "")  # a classification, not the message
    calls = chosen.calls
    assert await _text(fleet, request) == moved_to  # out: not even tried
    assert chosen.calls == calls
    chosen.fail = None
    now[0] += 2.5  # past the 2 s backoff: with probes off, it gets a request again
    assert await _text(fleet, request) == chosen.name
    assert all(r.healthy for r in fleet.replica_stats().replicas)
    assert fleet.replica_stats().moved_for_failure == 1


async def test_a_5xx_moves_on_but_a_4xx_is_the_callers_answer() -> None:
    fleet, fakes = _fleet()
    request = _request("Another document. " * 400)
    chosen = _by_name(fakes, (await fleet.complete(request)).choices[0].text)
    chosen.fail = UpstreamError("The upstream answered 503: loading", upstream_status=503)
    assert (await fleet.complete(request)).choices[0].text != chosen.name
    fleet2, fakes2 = _fleet()
    chosen2 = _by_name(fakes2, (await fleet2.complete(request)).choices[0].text)
    chosen2.fail = RequestError("max_tokens too large")
    with pytest.raises(RequestError):
        await fleet2.complete(request)
    assert sum(f.calls for f in fakes2) == 2
    assert all(r.errors == 0 and r.healthy for r in fleet2.replica_stats().replicas)


async def test_overload_moves_on_without_taking_the_replica_out() -> None:
    fleet, fakes = _fleet()
    request = _request("Busy document. " * 400)
    chosen = _by_name(fakes, await _text(fleet, request))
    chosen.fail = OverloadedError("queue full")
    assert await _text(fleet, request) != chosen.name
    assert all(r.healthy for r in fleet.replica_stats().replicas)
    for fake in fakes:
        fake.fail = OverloadedError("queue full")
    with pytest.raises(OverloadedError):  # all busy, none broken: a 429, not a 503
        await _text(fleet, request)


async def test_no_failover_once_the_first_event_is_out() -> None:
    fleet, fakes = _fleet()
    request = _request("Streamed document. " * 400)
    chosen = _by_name(fakes, await _text(fleet, request))
    chosen.fail = UpstreamError("The upstream could not be reached: reset")
    chosen.fail_midway = True
    seen: list[str] = []
    with pytest.raises(UpstreamError):
        async for event in fleet.stream(request):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    assert seen == [chosen.name]
    assert sum(f.calls for f in fakes) == 2  # no second replica was asked
    snap = {r.replica: r for r in fleet.replica_stats().replicas}
    assert sum(r.in_flight for r in snap.values()) == 0
    assert sum(not r.healthy for r in snap.values()) == 1


async def test_all_replicas_down_is_a_503_naming_the_hosts() -> None:
    fleet, fakes = _fleet()
    for fake in fakes:
        fake.fail = UpstreamError("The upstream could not be reached: refused")
    with pytest.raises(UpstreamUnavailableError) as caught:
        await fleet.complete(_request("x"))
    message = str(caught.value)
    assert "No upstream replica is healthy" in message
    assert all(url.split("//")[1].split("/")[0] in message for url in URLS)
    with pytest.raises(UpstreamUnavailableError):  # now out: refused without a call
        await _text(fleet, _request("y"))
    assert sum(f.calls for f in fakes) == 3
    assert fleet.replica_stats().unavailable == 2


async def test_bound_calls_reach_each_replica_engine() -> None:
    fleet, fakes = _fleet()
    call = object()
    bound = fleet.bind(call)
    text = await _text(bound, _request("Bound document. " * 400))
    assert _by_name(fakes, text).bound == [call]
    assert bound.replica_stats() is not None


def _probe_app(status: dict[str, int]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host not in status:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(404)  # not vLLM: a promptcache replica answers /readyz
        if request.url.path == "/readyz":
            return httpx.Response(status[host])
        return httpx.Response(404)

    return httpx.MockTransport(handler)


async def test_probes_take_replicas_out_and_put_them_back() -> None:
    status = {"10.9.0.1": 200, "10.9.0.2": 503}  # 10.9.0.3 refuses connections
    fakes = [FakeReplica(f"r{i}") for i in range(3)]
    fleet = ReplicaEngine(
        list(zip(URLS, fakes, strict=True)),
        ReplicaConfig(health_interval=5.0, base_backoff=0.01),
        probe_transport=_probe_app(status),
    )
    await fleet.check_health()
    up = {r.replica: r.healthy for r in fleet.replica_stats().replicas}
    assert up == {"10.9.0.1:8000": True, "10.9.0.2:8000": False, "10.9.0.3:8000": False}
    for i in range(12):  # everything goes to the one healthy replica
        assert (await fleet.complete(_request(f"doc {i} " * 500))).choices[0].text == "r0"
    status["10.9.0.2"] = 200
    fleet._checker._states[1].retry_at = 0.0  # its backoff ran out
    await fleet.check_health()
    assert [r.healthy for r in fleet.replica_stats().replicas] == [True, True, False]
    assert fleet._checker._states[0].probe_path == "/readyz"
    await fleet.aclose()


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="load factor"):
        ReplicaConfig(load_factor=1.0)
    with pytest.raises(ValueError, match="interval"):
        ReplicaConfig(health_interval=-1)
    fake = FakeReplica("a")
    with pytest.raises(ValueError, match="twice"):
        ReplicaEngine([(URLS[0], fake), (URLS[0] + "/", fake)])


async def _until(condition: Any) -> bool:
    for _ in range(250):  # up to ~5 s: the checks run every 20 ms here
        if condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_background_checks_start_with_the_first_request_and_run_until_closed() -> None:
    status = {"10.9.0.1": 200, "10.9.0.2": 200, "10.9.0.3": 200}
    fleet = ReplicaEngine(
        list(zip(URLS, [FakeReplica(f"r{i}") for i in range(3)], strict=True)),
        ReplicaConfig(health_interval=0.02, base_backoff=0.02, max_backoff=0.05),
        probe_transport=_probe_app(status),
    )
    await fleet.complete(_request("first"))
    del status["10.9.0.3"]  # refuses connections from now on
    assert await _until(lambda: not fleet.replica_stats().replicas[2].healthy)
    status["10.9.0.3"] = 200  # back: a probe after its backoff puts it back
    assert await _until(lambda: fleet.replica_stats().replicas[2].healthy)
    await fleet.aclose()
    assert fleet._checker._task is None
