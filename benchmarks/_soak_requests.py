"""What the soak's clients send: well-formed traffic in both dialects and a hostile corpus.

Every request is a :class:`Planned`: raw bytes (never re-encoded by a JSON
library, so malformed JSON, lone surrogate escapes and 2,000-deep nesting go
out exactly as written), headers, and what the client should do with the
answer (read a stream to its end, close it after the first chunk, or record
the entry it stored). :func:`plan` draws one from :data:`WEIGHTS`.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

MODEL = "SmolLM2-135M-Instruct"
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
JSON_HEADERS = {"content-type": "application/json"}
ANTHROPIC_HEADERS = {**JSON_HEADERS, "anthropic-version": "2023-06-01"}

# Shared by every miss: ~130 tokens, over the soak's --min-cache-tokens (64), so
# misses really read and write KV prefix blocks and references are exercised.
SYSTEM = "You are a terse assistant for a soak test of a caching server. " + " ".join(
    f"Rule {i}: answer in one short sentence about topic {i}." for i in range(12)
)
HIT_POOL_SIZE = 12
NESTING_DEPTH = 2_000
CJK_REQUIRED = "中" * 60


@dataclass(frozen=True, kw_only=True)
class Planned:
    """One request as it goes on the wire, and how its answer is judged."""

    kind: str
    path: str
    body: bytes
    headers: dict[str, str]
    stream: bool = False
    disconnect: bool = False
    """Close the response after its first chunk (a client going away mid-stream)."""
    records: bool = False
    """A greedy non-stream request: a 200 MISS with a key is a stored entry to check later."""
    slot: str = ""
    """"miss": meant to run the model (or to wait in its queue); "pool": runs it when
    its entry is not stored (first use, a restart, the Redis outage); "": should never
    reach the model. The soak bounds how many of each are in flight."""
    chunked: bool = False
    """Send the body without a content-length (chunked), so a size limit must count bytes."""
    expect: tuple[int, ...] = (200,)
    """Statuses the hardened server should answer; only reported, 5xx and hangs are failures."""

    def content(self) -> bytes | AsyncIterator[bytes]:
        if not self.chunked:
            return self.body
        return _chunks(self.body)


async def _chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


def openai_body(
    content: str, *, max_tokens: int = 8, stream: bool = False, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
    }
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def anthropic_body(
    content: str, *, max_tokens: int = 8, stream: bool = False, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": max_tokens,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": content}],
    }
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def _normal(dialect: str, kind: str, content: str, **options: Any) -> Planned:
    if dialect == "openai":
        body, path, headers = openai_body(content, **options), OPENAI_PATH, JSON_HEADERS
    else:
        body, path, headers = anthropic_body(content, **options), ANTHROPIC_PATH, ANTHROPIC_HEADERS
    stream = bool(options.get("stream"))
    return Planned(
        kind=f"{kind}-{dialect}",
        path=path,
        body=_dumps(body),
        headers=headers,
        stream=stream,
        records=not stream,
        slot="pool" if kind == "hit" else "miss",
    )


def _hit(dialect: str, rng: random.Random, nonce: str) -> Planned:
    # A fixed pool: the first request of each is a miss, every later one a HIT.
    return _normal(dialect, "hit", f"Pool question {rng.randrange(HIT_POOL_SIZE)}: name a color.")


def _miss(dialect: str, rng: random.Random, nonce: str) -> Planned:
    return _normal(dialect, "miss", f"Unique question {nonce}: name a fruit.")


def _stream(dialect: str, rng: random.Random, nonce: str) -> Planned:
    # Half replay a pooled entry as SSE, half stream a fresh generation.
    if rng.random() < 0.5:
        content = f"Pool question {rng.randrange(HIT_POOL_SIZE)}: name a color."
    else:
        content = f"Streamed question {nonce}: name a city."
    return _normal(dialect, "stream", content, stream=True)


def _disconnect(dialect: str, rng: random.Random, nonce: str) -> Planned:
    # Long enough that closing after the first chunk really cuts a running generation.
    planned = _normal(
        dialect, "disconnect", f"Cut question {nonce}: tell a story.", stream=True, max_tokens=64
    )
    return _replace(planned, disconnect=True)


def _replace(planned: Planned, **changes: Any) -> Planned:
    values = {name: getattr(planned, name) for name in Planned.__dataclass_fields__}
    values.update(changes)
    return Planned(**values)


def _hostile(
    kind: str,
    dialect: str,
    body: bytes,
    expect: tuple[int, ...],
    *,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    slot: str = "",
) -> Planned:
    path, default = (
        (OPENAI_PATH, JSON_HEADERS) if dialect == "openai" else (ANTHROPIC_PATH, ANTHROPIC_HEADERS)
    )
    return Planned(
        kind=f"hostile:{kind}-{dialect}",
        path=path,
        body=body,
        headers=headers if headers is not None else default,
        chunked=chunked,
        expect=expect,
        slot=slot,
    )


def _body_for(dialect: str, content: str, **extra: Any) -> dict[str, Any]:
    maker = openai_body if dialect == "openai" else anthropic_body
    return maker(content, max_tokens=4, **extra)


def _schema_extra(dialect: str, schema: dict[str, Any]) -> dict[str, Any]:
    if dialect == "openai":
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            }
        }
    return {"output_config": {"format": {"type": "json_schema", "schema": schema}}}


def hostile_bad_json(dialect: str, nonce: str, max_body: int) -> Planned:
    return _hostile(
        "bad-json", dialect, b'{"model": "' + MODEL.encode() + b'", "messages": [', (400,)
    )


def hostile_content_type(dialect: str, nonce: str, max_body: int) -> Planned:
    # Valid JSON under a content type that is not JSON: the hardened server says 415.
    body = _dumps(_body_for(dialect, f"plain {nonce}"))
    return _hostile("text-plain", dialect, body, (415,), headers={"content-type": "text/plain"})


def hostile_surrogate(dialect: str, nonce: str, max_body: int) -> Planned:
    # A JSON escape of a lone surrogate: valid JSON text, not encodable as UTF-8.
    text = _dumps(_body_for(dialect, f"SURROGATE {nonce}")).decode()
    body = text.replace("SURROGATE", "\\ud800").encode()
    return _hostile("surrogate", dialect, body, (400,))


def hostile_surrogate_model(dialect: str, nonce: str, max_body: int) -> Planned:
    # The unknown-model error quotes the model name: it must not echo an unencodable one.
    body = _dumps(_body_for(dialect, f"m {nonce}", model="MODEL")).decode()
    return _hostile(
        "surrogate-model", dialect, body.replace('"MODEL"', '"x\\ud800"').encode(), (400, 404)
    )


def hostile_deep(dialect: str, nonce: str, max_body: int) -> Planned:
    text = _dumps(_body_for(dialect, "DEEP")).decode()
    nested = "[" * NESTING_DEPTH + f'"{nonce}"' + "]" * NESTING_DEPTH
    return _hostile("deep-nesting", dialect, text.replace('"DEEP"', nested).encode(), (400,))


def hostile_cjk_schema(dialect: str, nonce: str, max_body: int) -> Planned:
    # issue 10: llguidance panics cutting its error message mid-character.
    schema = {"type": "object", "required": {"s": CJK_REQUIRED}}
    body = _dumps(_body_for(dialect, f"j {nonce}", **_schema_extra(dialect, schema)))
    # The schema is compiled by an engine worker, after the queue: bounded like a miss.
    return _hostile("cjk-required", dialect, body, (400,), slot="miss")


def hostile_huge_int(dialect: str, nonce: str, max_body: int) -> Planned:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": -(10**30), "maximum": 10**30}},
        "required": ["n"],
    }
    body = _dumps(_body_for(dialect, f"n {nonce}", **_schema_extra(dialect, schema)))
    return _hostile("huge-int", dialect, body, (200, 400), slot="miss")


def hostile_oversized(dialect: str, nonce: str, max_body: int) -> Planned:
    body = _dumps(_body_for(dialect, nonce + "x" * (max_body + 4096)))
    return _hostile("oversized", dialect, body, (413,))


def hostile_oversized_chunked(dialect: str, nonce: str, max_body: int) -> Planned:
    body = _dumps(_body_for(dialect, nonce + "x" * (max_body + 4096)))
    return _hostile("oversized-chunked", dialect, body, (413,), chunked=True)


def hostile_unknown_model(dialect: str, nonce: str, max_body: int) -> Planned:
    body = _dumps(_body_for(dialect, f"u {nonce}", model=f"no-such-model-{nonce}"))
    return _hostile("unknown-model", dialect, body, (404,))


HOSTILE: tuple[Callable[[str, str, int], Planned], ...] = (
    hostile_bad_json,
    hostile_content_type,
    hostile_surrogate,
    hostile_surrogate_model,
    hostile_deep,
    hostile_cjk_schema,
    hostile_huge_int,
    hostile_oversized,
    hostile_oversized_chunked,
    hostile_unknown_model,
)

# Relative weights of the kinds; "hostile" takes the next input of HOSTILE.
WEIGHTS: dict[str, float] = {
    "hit": 60,
    "miss": 20,
    "stream": 14,
    "disconnect": 8,
    "hostile": 12,
}
_NORMAL: dict[str, Callable[[str, random.Random, str], Planned]] = {
    "hit": _hit,
    "miss": _miss,
    "stream": _stream,
    "disconnect": _disconnect,
}


@dataclass
class Planner:
    """Draws requests for one client from its own seeded generator (reproducible runs)."""

    rng: random.Random
    client: int
    max_body: int
    _count: int = field(default=0)
    _hostile: int = field(default=0)

    def next(self, kinds: tuple[str, ...] = tuple(WEIGHTS)) -> Planned:
        """The next request, of one of ``kinds`` (keys of :data:`WEIGHTS`)."""
        self._count += 1
        nonce = f"c{self.client}n{self._count}r{self.rng.randrange(1 << 30)}"
        dialect = self.rng.choice(("openai", "anthropic"))
        kind = self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        if kind == "hostile":
            # In turn, not at random, from a different start per client: even a
            # short run sends every hostile input in both dialects.
            self._hostile += 1
            turn = self.client + self._hostile
            make = HOSTILE[turn % len(HOSTILE)]
            dialect = ("openai", "anthropic")[(turn // len(HOSTILE)) % 2]
            return make(dialect, nonce, self.max_body)
        return _NORMAL[kind](dialect, self.rng, nonce)


def all_kinds() -> dict[str, tuple[int, ...]]:
    """Every kind a planner can draw, in report order, with the statuses it should get."""
    kinds: dict[str, tuple[int, ...]] = {
        f"{name}-{d}": (200,) for name in _NORMAL for d in ("openai", "anthropic")
    }
    for make in HOSTILE:
        for dialect in ("openai", "anthropic"):
            planned = make(dialect, "k", 16)
            kinds[planned.kind] = planned.expect
    return kinds
