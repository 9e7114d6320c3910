from __future__ import annotations

import json
import threading
from decimal import Decimal

from prometheus_client import CollectorRegistry, generate_latest

from promptcache.cost.ledger import CostLedger, request_cost
from promptcache.cost.pricing import ModelPrice, PriceTable
from promptcache.result import Usage
from promptcache.server.cost_observer import (
    COST_HEADER,
    COST_WITHOUT_CACHE_HEADER,
    cost_headers,
    register_ledger_metrics,
)

GLM_PRICE = ModelPrice.of("10", "10", "glm")  # 0.01 per 1K tokens both ways
GLM_USAGE = Usage(input_tokens=800, cache_read_input_tokens=1200, output_tokens=500)
TABLE = PriceTable(
    models={"glm-4": GLM_PRICE, "claude-sonnet-4": ModelPrice.of("3", "15", "anthropic")}
)


def test_request_cost_miss_and_headers() -> None:
    charge = request_cost(GLM_USAGE, GLM_PRICE, response_cache_hit=False)
    assert charge.cost == Decimal("0.019")
    assert charge.cost_without_cache == Decimal("0.025")
    assert charge.saved == Decimal("0.006")
    assert cost_headers(charge) == {COST_HEADER: "0.019", COST_WITHOUT_CACHE_HEADER: "0.025"}


def test_response_cache_hit_costs_zero_and_counts_as_saved() -> None:
    charge = request_cost(GLM_USAGE, GLM_PRICE, response_cache_hit=True)
    assert charge.cost == 0
    assert charge.saved == Decimal("0.025")
    assert cost_headers(charge)[COST_HEADER] == "0"


def test_ledger_totals_glm_example() -> None:
    ledger = CostLedger(prices=TABLE)
    ledger.record(model="glm-4", tenant="", usage=GLM_USAGE, response_cache_hit=False)
    total = ledger.snapshot()["total"]
    assert total["cost"] == "0.019"
    assert total["cost_without_cache"] == "0.025"
    assert total["saved"] == "0.006"
    assert total["saved_percent"] == 24.0
    assert total["prompt_tokens"] == 2000
    assert total["cached_prompt_tokens"] == 1200
    assert total["hit_ratio_prompt_tokens"] == 0.6
    assert total["hit_ratio_requests"] == 0.0


def test_ledger_slices_per_model_and_tenant() -> None:
    ledger = CostLedger(prices=TABLE)
    cold = Usage(input_tokens=100, cache_creation_5m_input_tokens=2000, output_tokens=50)
    warm = Usage(input_tokens=100, cache_read_input_tokens=2000, output_tokens=50)
    ledger.record(model="claude-sonnet-4", tenant="alice", usage=cold, response_cache_hit=False)
    ledger.record(model="claude-sonnet-4", tenant="alice", usage=warm, response_cache_hit=False)
    ledger.record(model="claude-sonnet-4", tenant="bob", usage=warm, response_cache_hit=True)
    ledger.record(model="glm-4", tenant="bob", usage=GLM_USAGE, response_cache_hit=False)
    snap = ledger.snapshot()
    # Sonnet: cold = (100*3 + 2000*3.75 + 50*15)/1e6 = 0.00855; warm = (300 + 600 + 750)/1e6.
    claude = snap["by_model"]["claude-sonnet-4"]
    assert claude["requests"] == 3
    assert claude["response_cache_hits"] == 1
    assert Decimal(claude["cost"]) == Decimal("0.00855") + Decimal("0.00165")
    assert Decimal(claude["cost_without_cache"]) == 3 * Decimal("0.00705")
    assert claude["cache_write_5m_tokens"] == 2000
    assert claude["cache_read_tokens"] == 2000
    assert claude["response_cache_prompt_tokens"] == 2100
    assert claude["cached_prompt_tokens"] == 4100
    assert claude["price"] == {
        "input_per_mtok": "3",
        "output_per_mtok": "15",
        "profile": "anthropic",
        "matched": True,
    }
    alice, bob = snap["by_tenant"]["alice"], snap["by_tenant"]["bob"]
    assert (alice["requests"], bob["requests"]) == (2, 2)
    assert bob["hit_ratio_requests"] == 0.5
    assert Decimal(bob["cost"]) == Decimal("0.019")
    total = snap["total"]
    assert total["requests"] == 4
    assert Decimal(total["cost"]) == Decimal(alice["cost"]) + Decimal(bob["cost"])
    assert Decimal(total["saved"]) == Decimal(total["cost_without_cache"]) - Decimal(total["cost"])
    assert total["hit_ratio_requests"] == 0.25
    json.dumps(snap)  # JSON-ready as is

    bob_only = ledger.snapshot(tenant="bob")
    assert bob_only["by_tenant"] == {"bob": bob}
    assert bob_only["total"] == bob
    assert sorted(bob_only["by_model"]) == ["claude-sonnet-4", "glm-4"]
    assert bob_only["by_model"]["claude-sonnet-4"]["requests"] == 1
    assert ledger.snapshot(tenant="nobody")["total"]["requests"] == 0


def test_default_tenant_snapshot() -> None:
    ledger = CostLedger(prices=TABLE)
    ledger.record(model="glm-4", tenant="", usage=GLM_USAGE, response_cache_hit=False)
    ledger.record(model="glm-4", tenant="alice", usage=GLM_USAGE, response_cache_hit=False)
    assert ledger.snapshot(tenant="")["total"]["requests"] == 1
    assert list(ledger.snapshot(tenant="")["by_tenant"]) == ["default"]


def test_unused_write_premium_is_a_negative_saving() -> None:
    ledger = CostLedger(prices=TABLE)
    usage = Usage(cache_creation_1h_input_tokens=1000)
    charge = ledger.record(
        model="claude-sonnet-4", tenant="t", usage=usage, response_cache_hit=False
    )
    assert charge.saved == Decimal("-0.003")
    assert ledger.snapshot()["total"]["saved_percent"] == -100.0


def test_unknown_model_uses_default_price_and_says_so() -> None:
    ledger = CostLedger(prices=TABLE)
    ledger.record(model="mystery", tenant="", usage=GLM_USAGE, response_cache_hit=False)
    entry = ledger.snapshot()["by_model"]["mystery"]
    assert entry["price"]["matched"] is False
    assert entry["price"]["profile"] == TABLE.default.profile.name
    assert "default" in ledger.snapshot()["by_tenant"]


def test_explicit_price_overrides_table() -> None:
    ledger = CostLedger(prices=TABLE)
    charge = ledger.record(
        model="claude-sonnet-4",
        tenant="",
        usage=GLM_USAGE,
        response_cache_hit=False,
        price=GLM_PRICE,
    )
    assert charge.cost == Decimal("0.019")


def test_empty_ledger_snapshot() -> None:
    snap = CostLedger().snapshot()
    assert snap["by_model"] == {} and snap["by_tenant"] == {}
    assert snap["total"]["requests"] == 0
    assert snap["total"]["cost"] == "0"
    assert snap["total"]["saved_percent"] == 0.0
    assert snap["total"]["hit_ratio_prompt_tokens"] == 0.0


def test_concurrent_records_are_all_counted() -> None:
    ledger = CostLedger(prices=TABLE)

    def worker() -> None:
        for _ in range(200):
            ledger.record(model="glm-4", tenant="t", usage=GLM_USAGE, response_cache_hit=False)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = ledger.snapshot()["total"]
    assert total["requests"] == 1600
    assert Decimal(total["cost"]) == 1600 * Decimal("0.019")


def test_reset() -> None:
    ledger = CostLedger(prices=TABLE)
    ledger.record(model="glm-4", tenant="", usage=GLM_USAGE, response_cache_hit=False)
    ledger.reset()
    assert ledger.snapshot()["total"]["requests"] == 0


def test_prometheus_metrics() -> None:
    registry = CollectorRegistry()
    ledger = CostLedger(prices=TABLE)
    register_ledger_metrics(ledger, registry)
    ledger.record(model="glm-4", tenant="alice", usage=GLM_USAGE, response_cache_hit=False)
    ledger.record(model="glm-4", tenant="alice", usage=GLM_USAGE, response_cache_hit=True)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    pair = {"model": "glm-4", "tenant": "alice"}
    assert value("promptcache_cost_total", **pair) == 0.019
    assert value("promptcache_cost_without_cache_total", **pair) == 0.05
    assert value("promptcache_cost_saved", **pair) == 0.031
    assert value("promptcache_accounted_requests_total", **pair, response_cache="hit") == 1
    assert value("promptcache_accounted_requests_total", **pair, response_cache="miss") == 1
    assert value("promptcache_accounted_prompt_tokens_total", **pair, kind="cache_read") == 1200
    assert value("promptcache_accounted_prompt_tokens_total", **pair, kind="response_cache") == 2000
    assert value("promptcache_accounted_output_tokens_total", **pair) == 1000
    assert value("promptcache_hit_ratio_requests") == 0.5
    assert value("promptcache_hit_ratio_prompt_tokens") == 0.8
    assert value("promptcache_saved_ratio") == 0.62
    assert b"# HELP promptcache_cost_total" in generate_latest(registry)
