"""LangChain's SQLiteCache against promptcache's LangChain cache over SQLite, one run.

Both caches get the same 2,000 (prompt, llm_string) -> [ChatGeneration]
entries: µs per ``update`` and per ``lookup`` for each, and the ratios
(LangChain's time over ours). Then raw ``put``/``get`` µs of the memory,
sqlite and redis stores (redis: a temporary ``redis-server`` on a free
127.0.0.1 port, skipped if the binary is missing).

    python benchmarks/response_cache_vs_langchain.py [--entries 2000] [--json]

Targets: lookup >= 10x faster, update >= 20x faster than LangChain's SQLiteCache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_community.cache import SQLiteCache
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration

from promptcache.integrations.langchain import PromptCacheLangChainCache
from promptcache.store import ResponseStore, open_store

LLM_STRING = (
    '{"lc": 1, "type": "constructor", "id": ["langchain", "chat_models", "openai", "ChatOpenAI"],'
    ' "kwargs": {"model_name": "gpt-4o-mini", "temperature": 0.0}}---[(\'stop\', None)]'
)


def _entries(count: int) -> list[tuple[str, list[ChatGeneration]]]:
    return [
        (
            json.dumps([{"type": "human", "content": f"Question {i}: what is {i} squared?"}]),
            [
                ChatGeneration(
                    message=AIMessage(
                        content=f"{i} squared is {i * i}. " * 6,
                        id=f"run-{i}",
                        response_metadata={"model_name": "gpt-4o-mini", "finish_reason": "stop"},
                    )
                )
            ],
        )
        for i in range(count)
    ]


def _per_call_us(calls: Callable[[], None], count: int) -> float:
    start = time.perf_counter()
    calls()
    return (time.perf_counter() - start) / count * 1e6


def bench_langchain_caches(count: int, workdir: Path) -> dict[str, float]:
    entries = _entries(count)
    langchain = SQLiteCache(database_path=str(workdir / "langchain.db"))
    ours = PromptCacheLangChainCache(f"sqlite:///{workdir}/promptcache.db")
    figures: dict[str, float] = {}
    for name, cache in (("langchain", langchain), ("promptcache", ours)):

        def update_all(cache: Any = cache) -> None:
            for prompt, generations in entries:
                cache.update(prompt, LLM_STRING, generations)

        def lookup_all(cache: Any = cache, name: str = name) -> None:
            for prompt, _ in entries:
                if cache.lookup(prompt, LLM_STRING) is None:
                    raise RuntimeError(f"{name}: lost an entry")

        figures[f"{name}_update_us"] = _per_call_us(update_all, count)
        figures[f"{name}_lookup_us"] = _per_call_us(lookup_all, count)
    if ours.lookup(entries[7][0], LLM_STRING) != langchain.lookup(entries[7][0], LLM_STRING):
        raise RuntimeError("the two caches disagree on a stored value")
    ours.close()
    figures["lookup_ratio"] = figures["langchain_lookup_us"] / figures["promptcache_lookup_us"]
    figures["update_ratio"] = figures["langchain_update_us"] / figures["promptcache_update_us"]
    return figures


def bench_store(store: ResponseStore, count: int, value: bytes) -> dict[str, float]:
    keys = [f"pc1:sha256:{i:064x}" for i in range(count)]

    def put_all() -> None:
        for key in keys:
            store.put(key, value)

    def get_all() -> None:
        for key in keys:
            if store.get(key) is None:
                raise RuntimeError(f"{store.url}: lost an entry")

    put = _per_call_us(put_all, count)
    get = _per_call_us(get_all, count)
    store.close()
    return {"put_us": put, "get_us": get}


class _TemporaryRedis:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise FileNotFoundError("redis-server")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def run(count: int) -> dict[str, Any]:
    warnings.filterwarnings("ignore")  # LangChain's beta/pending-deprecation chatter
    value = json.dumps({"text": "x" * 600}).encode()
    with tempfile.TemporaryDirectory(prefix="promptcache-bench-") as tmp:
        workdir = Path(tmp)
        report: dict[str, Any] = {"entries": count}
        report.update(bench_langchain_caches(count, workdir))
        stores: dict[str, Any] = {
            "memory": bench_store(open_store("memory://"), count, value),
            "sqlite": bench_store(open_store(f"sqlite:///{workdir}/raw.db"), count, value),
        }
        try:
            redis = _TemporaryRedis(workdir)
        except (FileNotFoundError, RuntimeError) as exc:
            stores["redis"] = {"skipped": str(exc)}
        else:
            try:
                stores["redis"] = bench_store(
                    open_store(f"redis://127.0.0.1:{redis.port}/0"), count, value
                )
            finally:
                redis.stop()
        report["stores"] = stores
    report["targets_met"] = report["lookup_ratio"] >= 10 and report["update_ratio"] >= 20
    return report


def _print_table(report: dict[str, Any]) -> None:
    print(f"LangChain cache, {report['entries']:,} entries, µs per call")
    print(f"{'':14}{'LangChain SQLiteCache':>24}{'promptcache sqlite':>22}{'ratio':>10}")
    for op in ("lookup", "update"):
        print(
            f"{op:14}{report[f'langchain_{op}_us']:>24.1f}"
            f"{report[f'promptcache_{op}_us']:>22.1f}{report[f'{op}_ratio']:>9.1f}x"
        )
    print("targets: lookup >= 10x, update >= 20x:", "met" if report["targets_met"] else "NOT met")
    print("\nRaw store µs per call")
    for name, figures in report["stores"].items():
        if "skipped" in figures:
            print(f"  {name:8} skipped ({figures['skipped']})")
        else:
            print(f"  {name:8} put {figures['put_us']:8.1f}   get {figures['get_us']:8.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.entries < 1:
        parser.error("--entries must be >= 1")
    report = run(args.entries)
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
