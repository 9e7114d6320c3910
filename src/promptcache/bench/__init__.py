"""``promptcache bench``: time to first token and session cost, measured on the local engine.

``runner`` drives the engine, ``report`` holds the figures and their JSON
schema, ``plot`` draws the PNG, ``workload`` builds the prompts.
"""

from __future__ import annotations

from promptcache.bench.report import BenchReport, SessionCost, TTFTPoint, price_session
from promptcache.bench.runner import (
    BenchConfig,
    BenchEngine,
    BenchProgress,
    BenchRunner,
    load_local_engine,
)

__all__ = [
    "BenchConfig",
    "BenchEngine",
    "BenchProgress",
    "BenchReport",
    "BenchRunner",
    "SessionCost",
    "TTFTPoint",
    "load_local_engine",
    "price_session",
]
