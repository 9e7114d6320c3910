"""promptcache against llama.cpp's server on the same GGUF, side by side over HTTP, one run.

The peer is llama-cpp-python's OpenAI server (``python -m llama_cpp.server``,
``--n_threads 2 --cache true --cache_type ram``; ``--threads`` sets both servers'
threads) from its own venv
(``make bench-peers`` builds ``.venv-peers/``; it compiles llama.cpp, so it is
never part of ``make setup``). promptcache is ``promptcache serve --model
<the same GGUF> --store none`` (no response cache: every request reaches the
engine, as every request reaches llama.cpp). The two run one at a time -- never
both loaded while measuring -- on 127.0.0.1, each measured with the same
streamed Chat Completions through the official ``openai`` SDK, greedy:

1. **single-stream decode** -- ``--decode-tokens`` (200) tokens of a story;
   tokens after the first over the time they took (the prefill left out);
2. **concurrent clients** -- ``--clients`` (8) clients at once, each asking a
   different question for ``--client-tokens`` (64) tokens; total tokens over
   the wall time from the first request to the last token;
3. **multi-document round-robin** -- ``--documents`` (6) documents of
   ~``--doc-tokens`` (1,360) tokens as the system prompt, ``--questions`` (3)
   questions each, asked round-robin (every document's first question, then
   every second, ...), ``--answer-tokens`` (32) each: mean time to first token
   of a document's first question (a miss for both), mean of its later
   questions (a prefix-cache hit where the server has one), and the wall time.

Each server gets one short warm-up request first. Ratios are promptcache over
llama.cpp for rates and llama.cpp over promptcache for times: above 1 means
promptcache is faster. The figures depend on the machine's load, printed with
them. Every request has ``--request-timeout``; both servers are killed at the
end, even on an error.

Usage: ``python benchmarks/vs_llamacpp.py [--peer-python .venv-peers/bin/python]
[--model GGUF] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

from _peers import (
    ServerCommand,
    StreamTiming,
    first_model,
    log_tail,
    running_server,
    stream_chat,
)
from promptcache.model.loading import embedded_gguf_path

LOG_DIR = Path("benchmarks/out")
CITIES = ("Lisbon", "Porto", "Madrid", "Lyon", "Turin", "Ghent", "Bremen", "Krakow")
GOODS = ("olive oil", "copper wire", "wool socks", "glass jars", "oak barrels", "tin cans")
COLOURS = ("red", "blue", "green", "grey", "white", "amber", "violet")
QUESTIONS = (
    "Which depot shipped the most crates of tin cans?",
    "On which days did the Lisbon depot ship olive oil?",
    "How many crates of wool socks were shipped in total?",
)
TOKENS_PER_SENTENCE = 30
"""SmolLM2's tokenizer on one ledger sentence (measured: 30-31 tokens)."""
TARGETS = {"decode": 1.25, "concurrent_over_single": 3.0, "round_robin_wall": 5.0}
"""Issue 16's targets: decode and wall-time ratios against llama.cpp, and promptcache's
concurrent total over its own single stream."""


def ledger(document: int, tokens: int) -> str:
    """A document of ~``tokens`` tokens: shipping records, distinct per document."""
    sentences = max(1, round(tokens / TOKENS_PER_SENTENCE))
    return " ".join(
        f"Entry {i} of ledger {document}: the {COLOURS[(i + document) % 7]} depot in "
        f"{CITIES[(3 * i + document) % 8]} shipped {(37 * i + 11 * document) % 900 + 100} "
        f"crates of {GOODS[(i + 2 * document) % 6]} on day {(i * 5 + document) % 28 + 1}."
        for i in range(sentences)
    )


def chat(system: str | None, user: str) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    return messages


def single_stream(client: openai.OpenAI, model: str, tokens: int) -> dict[str, Any]:
    timing = stream_chat(
        client,
        model=model,
        messages=chat(None, "Write a long story about a lighthouse keeper and a storm."),
        max_tokens=tokens,
    )
    return {
        "decode_tok_s": round(timing.decode_tokens_per_s, 2),
        "decode_tokens": timing.completion_tokens,
    }


def concurrent_clients(
    client: openai.OpenAI, model: str, clients: int, tokens: int
) -> dict[str, Any]:
    def one(index: int) -> tuple[float, StreamTiming]:
        sent = time.perf_counter()
        prompt = f"Client {index}: write a short poem about the number {index + 3}."
        return sent, stream_chat(
            client, model=model, messages=chat(None, prompt), max_tokens=tokens
        )

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, range(clients)))
    ended = max(sent + timing.last_token_s for sent, timing in results)
    total = sum(timing.completion_tokens for _, timing in results)
    return {
        "concurrent_total_tok_s": round(total / (ended - began), 2),
        "concurrent_tokens": total,
    }


def round_robin(
    client: openai.OpenAI, model: str, documents: int, doc_tokens: int, questions: int, tokens: int
) -> dict[str, Any]:
    texts = [ledger(d, doc_tokens) for d in range(documents)]
    misses: list[float] = []
    later: list[float] = []
    prompt_tokens: list[int] = []
    cached: list[int] = []
    began = time.perf_counter()
    for q in range(questions):
        for text in texts:
            messages = chat(text, QUESTIONS[q % len(QUESTIONS)])
            timing = stream_chat(client, model=model, messages=messages, max_tokens=tokens)
            (misses if q == 0 else later).append(timing.first_token_s)
            if timing.prompt_tokens is not None:
                prompt_tokens.append(timing.prompt_tokens)
            if q > 0 and timing.cached_tokens is not None:
                cached.append(timing.cached_tokens)
    wall = time.perf_counter() - began
    return {
        "miss_ttft_s": round(statistics.fmean(misses), 4),
        "later_ttft_s": round(statistics.fmean(later), 4) if later else None,
        "round_robin_wall_s": round(wall, 2),
        "prompt_tokens_mean": round(statistics.fmean(prompt_tokens)) if prompt_tokens else None,
        "later_cached_tokens_mean": round(statistics.fmean(cached)) if cached else None,
    }


def measure(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    client = openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="unused", timeout=args.request_timeout, max_retries=0
    )
    model = first_model(client)
    stream_chat(client, model=model, messages=chat(None, "Say hello."), max_tokens=8)  # warm-up
    figures: dict[str, Any] = {"model": model}
    figures.update(single_stream(client, model, args.decode_tokens))
    figures.update(concurrent_clients(client, model, args.clients, args.client_tokens))
    figures.update(
        round_robin(
            client,
            model,
            args.documents,
            args.doc_tokens,
            args.questions,
            args.answer_tokens,
        )
    )
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    return figures


def commands(args: argparse.Namespace, gguf: Path, kv_dir: Path) -> list[ServerCommand]:
    """The two servers. ``kv_dir``: promptcache's KV disk tier, empty for this run -- its
    default ``.promptcache/kv`` would still hold an earlier run's documents, and their
    "misses" would be disk hits."""
    llama = ServerCommand(
        label="llama.cpp (llama-cpp-python server)",
        argv=[
            str(args.peer_python),
            *("-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"),
            *("--port", "{port}", "--n_threads", str(args.threads)),
            *("--cache", "true", "--cache_type", "ram"),
            # Its default (true) cuts a running stream off when the next request
            # arrives; concurrent clients must queue instead, as they do here.
            *("--interrupt_requests", "false"),
        ],
        ready_path="/v1/models",
        log_path=LOG_DIR / "vs_llamacpp.llama.log",
    )
    ours = ServerCommand(
        label="promptcache serve",
        argv=[
            sys.executable,
            *("-c", "from promptcache.cli import main; main()", "serve", "--model", str(gguf)),
            *("--host", "127.0.0.1", "--port", "{port}", "--store", "none"),
            *("--kv-disk-path", str(kv_dir)),
        ],
        ready_path="/healthz",
        log_path=LOG_DIR / "vs_llamacpp.promptcache.log",
        env={"OMP_NUM_THREADS": str(args.threads)},  # torch's intra-op threads
    )
    return [llama, ours]


def ratios(llama: dict[str, Any], ours: dict[str, Any]) -> dict[str, float | None]:
    def rate(key: str) -> float | None:
        return round(ours[key] / llama[key], 2) if llama.get(key) and ours.get(key) else None

    def time_ratio(key: str) -> float | None:
        return round(llama[key] / ours[key], 2) if llama.get(key) and ours.get(key) else None

    return {
        "decode": rate("decode_tok_s"),
        "concurrent": rate("concurrent_total_tok_s"),
        "miss_ttft": time_ratio("miss_ttft_s"),
        "later_ttft": time_ratio("later_ttft_s"),
        "round_robin_wall": time_ratio("round_robin_wall_s"),
    }


def print_table(report: dict[str, Any], args: argparse.Namespace) -> None:
    llama, ours, ratio = report["llamacpp"], report["promptcache"], report["ratios"]
    docs = f"{args.documents} documents x ~{ours.get('prompt_tokens_mean') or args.doc_tokens} tok"
    rows: list[tuple[str, str, Callable[[float], str], str]] = [
        (f"single-stream decode, {args.decode_tokens} tokens", "decode_tok_s", tok_s, "decode"),
        (
            f"{args.clients} concurrent clients x {args.client_tokens} tokens",
            "concurrent_total_tok_s",
            tok_s,
            "concurrent",
        ),
        (f"{docs}, {args.questions} q each: TTFT of a miss", "miss_ttft_s", secs, "miss_ttft"),
        ("same workload, TTFT of a later question", "later_ttft_s", secs, "later_ttft"),
        ("same workload, wall time", "round_robin_wall_s", secs, "round_robin_wall"),
    ]
    print(f"| workload | llama.cpp server | promptcache | ratio |\n|{'---|' * 4}")
    for label, key, show, ratio_key in rows:
        value = ratio[ratio_key]
        shown = f"{value:.2f}x" if value is not None else "n/a"
        print(f"| {label} | {show(llama[key])} | {show(ours[key])} | {shown} |")
    single = ours["decode_tok_s"]
    scaling = ours["concurrent_total_tok_s"] / single if single else 0.0
    print(
        f"\ntargets: decode >= {TARGETS['decode']}x: {verdict(ratio['decode'], 'decode')}; "
        f"wall >= {TARGETS['round_robin_wall']}x: "
        f"{verdict(ratio['round_robin_wall'], 'round_robin_wall')}; promptcache "
        f"{args.clients} streams {scaling:.2f}x its single stream "
        f"(>= {TARGETS['concurrent_over_single']}x: "
        f"{verdict(scaling, 'concurrent_over_single')})"
    )
    print(
        f"decode tokens: llama.cpp {llama['decode_tokens']}, promptcache {ours['decode_tokens']}; "
        f"later questions' cached tokens (promptcache): {ours.get('later_cached_tokens_mean')}"
    )
    print(
        f"load average (1 min) after each: llama.cpp {llama['load_average_1m']}, "
        f"promptcache {ours['load_average_1m']} on {os.cpu_count()} CPUs"
    )


def tok_s(value: float) -> str:
    return f"{value:.1f} tok/s"


def secs(value: float) -> str:
    return f"{value:.3f} s"


def verdict(value: float | None, target: str) -> str:
    return "n/a" if value is None else ("met" if value >= TARGETS[target] else "NOT met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-python", type=Path, default=Path(".venv-peers/bin/python"))
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: embedded)")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads of each server: llama.cpp's --n_threads, promptcache's OMP_NUM_THREADS",
    )
    parser.add_argument("--decode-tokens", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--client-tokens", type=int, default=64)
    parser.add_argument("--documents", type=int, default=6)
    parser.add_argument("--doc-tokens", type=int, default=1360)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    counts = (args.decode_tokens, args.clients, args.client_tokens, args.documents)
    if min(counts) < 2 or min(args.questions, args.answer_tokens, args.threads) < 1:
        parser.error("counts must be >= 2 (tokens, clients, documents) or >= 1 (the rest)")
    if not args.peer_python.exists():
        parser.error(f"{args.peer_python} is missing: run `make bench-peers` to build it")
    gguf = args.model or embedded_gguf_path()
    if gguf.suffix.lower() != ".gguf" or not gguf.is_file():
        parser.error(f"--model must be a GGUF file both servers can load, got {gguf}")

    report: dict[str, Any] = {"gguf": gguf.name, "threads": args.threads}
    kv_dir = tempfile.TemporaryDirectory(prefix="vs-llamacpp-kv-")
    servers = commands(args, gguf, Path(kv_dir.name))
    for key, command in zip(("llamacpp", "promptcache"), servers, strict=True):
        if not args.json:
            print(f"measuring {command.label} ...", file=sys.stderr, flush=True)
        with running_server(command, start_timeout=args.start_timeout) as base_url:
            try:
                report[key] = measure(base_url, args)
            except openai.APIError as error:  # a server that died or refused: say which, why
                sys.exit(f"{command.label} failed: {error}\n{log_tail(command.log_path)}")
    kv_dir.cleanup()
    report["ratios"] = ratios(report["llamacpp"], report["promptcache"])
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report, args)


if __name__ == "__main__":
    main()
