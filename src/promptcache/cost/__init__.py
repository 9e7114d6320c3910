"""What requests cost with and without caching: price profiles and running totals.

``pricing.py`` holds the price table and profiles (data plus the per-request
arithmetic); ``ledger.py`` the running totals. Neither knows HTTP or metrics
(see ``promptcache.server.cost_observer``).
"""

from __future__ import annotations

from promptcache.cost.ledger import CostLedger, CostTotals, RequestCost, request_cost
from promptcache.cost.pricing import ModelPrice, PriceTable

__all__ = ["CostLedger", "CostTotals", "ModelPrice", "PriceTable", "RequestCost", "request_cost"]
