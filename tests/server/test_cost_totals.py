"""Cost accounting through the HTTP server: per-response headers and the running totals."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import uvicorn
from typer.testing import CliRunner

from promptcache.cli import app as cli_app
from promptcache.cost.ledger import CostLedger
from promptcache.cost.pricing import ModelPrice, PriceTable
from promptcache.engine.base import ModelInfo, PrefixCacheSnapshot
from promptcache.engine.threaded import ThreadedEngine
from promptcache.request import ChatRequest
from promptcache.response_cache import ResponseCache
from promptcache.result import Choice, Result, StreamEvent, TextDelta, Usage
from promptcache.server.app import create_app
from promptcache.server.auth import tenant_id
from promptcache.server.config import ServerConfig
from promptcache.server.cost_observer import CostObserver, register_ledger_metrics
from promptcache.store import open_store

MODEL = "glm-fake"
# SPEC §5's GLM example: 0.01 per 1K tokens both ways, read x0.5.
PRICES = PriceTable(
    models={MODEL: ModelPrice.of("10", "10", "glm")}, default=ModelPrice.of("0", "0", "local")
)
KEYS = ("key-alice", "key-bob")
ADMIN_KEY = "key-operator"


class PrefixFakeEngine:
    """One token per word; a system prompt seen before is a prefix-cache read.

    Output usage is ``max_tokens`` so a test can script exact figures.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=MODEL)]

    def prefix_stats(self) -> PrefixCacheSnapshot | None:
        return None

    def clear_prefix_cache(self) -> None:
        return None

    def generate(
        self, request: ChatRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        system = " ".join(block.text for block in request.system)
        system_tokens = len(system.split())
        message_tokens = sum(len(m.text().split()) for m in request.messages)
        with self._lock:
            cached = system_tokens if system in self._seen else 0
            self._seen.add(system)
        output = request.sampling.max_tokens or 1
        yield TextDelta(choice_index=0, text="ok")
        yield Result(
            id="r",
            model=MODEL,
            created=1_700_000_000,
            choices=(Choice(text="ok"),),
            usage=Usage(
                input_tokens=system_tokens + message_tokens - cached,
                cache_read_input_tokens=cached,
                output_tokens=output,
            ),
        )


def _openai(system_words: int, user_words: int, word: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 500,
        "messages": [
            {"role": "system", "content": " ".join(["policy"] * system_words)},
            {"role": "user", "content": " ".join([word] * user_words)},
        ],
    }


def _anthropic(system_words: int, user_words: int, word: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 500,
        "system": " ".join(["policy"] * system_words),
        "messages": [{"role": "user", "content": " ".join([word] * user_words)}],
    }


async def test_costs_headers_and_totals_after_a_scripted_session() -> None:
    ledger = CostLedger(prices=PRICES)
    engine = ThreadedEngine(PrefixFakeEngine(), max_queue=4)
    app = create_app(
        ServerConfig(api_keys=KEYS, admin_keys=(ADMIN_KEY,)),
        engine=engine,
        cache=ResponseCache(open_store("memory://")),
        observers=[CostObserver(ledger)],
        stats_sections={"costs": ledger.snapshot},
    )
    register_ledger_metrics(ledger, app.state.metrics.registry)
    alice = {"authorization": f"Bearer {KEYS[0]}"}
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    bob = {"x-api-key": KEYS[1], "anthropic-version": "2023-06-01"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            # 1. Cold: 2,000 prompt tokens, nothing cached -> 0.025 both ways.
            first = await client.post(
                "/v1/chat/completions", json=_openai(1200, 800, "a"), headers=alice
            )
            assert first.status_code == 200, first.text
            assert first.headers["x-promptcache"] == "MISS"
            assert first.headers["x-promptcache-cost"] == "0.025"
            assert first.headers["x-promptcache-cost-without-cache"] == "0.025"

            # 2. Same system prompt, new question: 1,200 read from the prefix cache.
            second = await client.post(
                "/v1/chat/completions", json=_openai(1200, 800, "b"), headers=alice
            )
            assert second.headers["x-promptcache"] == "MISS"
            assert second.headers["x-promptcache-cost"] == "0.019"
            assert second.headers["x-promptcache-cost-without-cache"] == "0.025"

            # 3. The same request again: a response-cache hit costs 0, 0.025 saved.
            third = await client.post(
                "/v1/chat/completions", json=_openai(1200, 800, "b"), headers=alice
            )
            assert third.headers["x-promptcache"] == "HIT"
            assert third.headers["x-promptcache-cost"] == "0"
            assert third.headers["x-promptcache-cost-without-cache"] == "0.025"

            # 4. Another tenant, Anthropic dialect, streamed, prefix cached:
            #    input 300 + read 1200 x 0.5 + output 500 -> (300 + 600 + 500) / 1e5 = 0.014
            fourth = await client.post(
                "/v1/messages", json={**_anthropic(1200, 300, "c"), "stream": True}, headers=bob
            )
            assert fourth.status_code == 200, fourth.text
            assert fourth.headers["x-promptcache"] == "MISS"

            stats = (await client.get("/v1/cache/stats", headers=admin)).json()
            alice_stats = (await client.get("/v1/cache/stats", headers=alice)).json()
            metrics = (await client.get("/metrics")).text
    finally:
        await engine.aclose()

    assert stats["scope"] == "all"
    costs = stats["costs"]
    total = costs["total"]
    assert total["requests"] == 4
    assert total["response_cache_hits"] == 1
    assert Decimal(total["cost"]) == Decimal("0.025") + Decimal("0.019") + Decimal("0.014")
    assert Decimal(total["cost_without_cache"]) == 3 * Decimal("0.025") + Decimal("0.02")
    assert Decimal(total["saved"]) == Decimal("0.037")
    assert total["prompt_tokens"] == 3 * 2000 + 1500
    assert total["cached_prompt_tokens"] == 1200 + 2000 + 1200
    assert total["hit_ratio_requests"] == 0.25
    assert total["hit_ratio_prompt_tokens"] == round(4400 / 7500, 6)

    by_tenant = costs["by_tenant"]
    alice_totals = by_tenant[tenant_id(KEYS[0])]
    bob_totals = by_tenant[tenant_id(KEYS[1])]
    assert (alice_totals["requests"], bob_totals["requests"]) == (3, 1)
    assert alice_totals["cost"] == "0.044"
    assert alice_totals["saved"] == "0.031"
    assert bob_totals["cost"] == "0.014"
    assert costs["by_model"][MODEL]["price"]["profile"] == "glm"

    # A tenant's own key sees its own spend only; the cache figures stay server-wide.
    assert alice_stats["scope"] == {"tenant": tenant_id(KEYS[0])}
    assert alice_stats["costs"]["by_tenant"] == {tenant_id(KEYS[0]): alice_totals}
    assert alice_stats["costs"]["total"] == alice_totals
    assert alice_stats["costs"]["by_model"][MODEL]["requests"] == 3
    assert alice_stats["requests"] == stats["requests"]

    alice_label = f'model="{MODEL}",tenant="{tenant_id(KEYS[0])}"'
    assert f"promptcache_cost_total{{{alice_label}}} 0.044" in metrics
    assert f"promptcache_cost_without_cache_total{{{alice_label}}} 0.075" in metrics
    assert "promptcache_hit_ratio_requests 0.25" in metrics


def test_stats_url_shows_costs_of_a_running_server() -> None:
    ledger = CostLedger(prices=PRICES)
    ledger.record(
        model=MODEL,
        tenant="",
        usage=Usage(input_tokens=800, cache_read_input_tokens=1200, output_tokens=500),
        response_cache_hit=False,
    )
    ledger.record(model="mystery", tenant="", usage=Usage(input_tokens=10), response_cache_hit=True)
    engine = ThreadedEngine(PrefixFakeEngine(), max_queue=4)
    app = create_app(
        ServerConfig(), engine=engine, cache=None, stats_sections={"costs": ledger.snapshot}
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):  # bounded wait for the socket (at most ~10 s)
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        result = CliRunner().invoke(
            cli_app, ["stats", "--url", f"http://127.0.0.1:{port}"], env={"COLUMNS": "240"}
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        asyncio.run(engine.aclose())
    assert result.exit_code == 0, result.output
    assert "What caching saved" in result.output
    assert "$0.0190" in result.output  # cost of the GLM example
    assert "$0.0250" in result.output  # ... without cache
    assert "24.0%" in result.output
    assert "No price entry for mystery" in result.output


def test_stats_url_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(cli_app, ["stats", "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert "cannot read" in result.output
