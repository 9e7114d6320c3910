"""One request through the local engine: match -> gather -> prefill -> commit -> decode -> release.

:class:`Generation` holds one rendered request's state, and
:meth:`Generation.run` takes these steps in order:

1. :meth:`~Generation.match` the longest cached prefix for the tenant (waiting
   for blocks another request is computing);
2. :meth:`~Generation.gather` its KV into the request's own buffer;
3. :meth:`~Generation.prefill` only the rest -- at least the last prompt token,
   whose logits start decoding -- in chunks, so other requests' decode steps
   and a cancellation get in between the chunks of a long prompt;
4. :meth:`~Generation.commit` the prompt's blocks and breakpoint pins, once,
   as soon as it pays: straight away when there are breakpoints (usage
   depends on what was pinned), else after the first token is out, so the
   copy stays off the time to first token -- and also when the request is
   cancelled or closed after its prefill, so later requests still hit it;
5. :meth:`~Generation.decode` each choice with ``sampling.py`` -- through the
   request's output grammar, if any (``structured_output.py``) -- yielding
   ``TextDelta`` s and returning the choice's outcome;
6. :meth:`~Generation.release` the match in every case, including
   cancellation and errors.

It yields a ``PromptUsage``, the ``TextDelta`` s and one ``Result`` whose
``Usage`` splits the prompt exactly (``usage.py``).

Requests run on the server's worker threads; every forward runs on one
compute thread (``executor.py``), which takes prefill chunks and decode
batches in turn and runs the concurrent requests' decode steps as one batched
forward. The prefix cache is thread-safe on its own: ``match`` runs on the
workers (it may wait for another request's prefill, which the compute thread
finishes meanwhile); ``gather`` and ``commit``, being big copies, run on the
compute thread too.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from promptcache.engine.local.executor import CallBatcher, DecodeLane, ModelExecutor
from promptcache.engine.local.kv_buffers import KVBuffer, KVBuffers
from promptcache.engine.local.prompt import RenderedPrompt
from promptcache.engine.local.sampling import Detokenizer, TextStream, TokenSampler
from promptcache.engine.local.structured_output import OutputGrammar, OutputGrammars
from promptcache.engine.local.tool_calls import ToolCallCapture, tool_calls_allowed
from promptcache.model.runtime import LlamaRuntime
from promptcache.model.torch_threads import torch_threads
from promptcache.prefix.base import BasePrefixCache, CommitReport, PrefixMatch
from promptcache.request import BreakpointPosition, ChatRequest, PinTTL, ToolUseBlock
from promptcache.result import (
    Choice,
    FinishReason,
    PromptUsage,
    Result,
    RetentionReport,
    StreamEvent,
    TextDelta,
    Usage,
)
from promptcache.usage import account_prompt

INITIAL_DECODE_ROOM = 128
"""KV positions reserved for output up front; the buffer doubles when decoding
needs more, so a large ``max_tokens`` costs no memory (or zeroing) unless used."""


@dataclass(frozen=True, kw_only=True)
class EngineParts:
    """What every generation of one :class:`~promptcache.engine.local.LocalEngine` shares."""

    runtime: LlamaRuntime
    executor: ModelExecutor
    decoder: DecodeLane
    prefills: CallBatcher
    """Prompt chunks, several requests' run as one forward (``LlamaRuntime.forward_chunks``)."""
    cache: BasePrefixCache
    buffers: KVBuffers
    detokenizer: Detokenizer
    grammars: OutputGrammars
    eos_ids: frozenset[int]
    served_name: str


@dataclass
class ChoiceOutcome:
    """How one choice ended: its text, why, and how many tokens it took."""

    text: str = ""
    finish_reason: FinishReason = "length"
    stop_sequence: str | None = None
    tokens: int = 0
    tool_calls: tuple[ToolUseBlock, ...] = ()


class Generation:
    """One validated, rendered request's steps (see the module docs); :meth:`run` them once."""

    def __init__(
        self,
        parts: EngineParts,
        request: ChatRequest,
        prompt: RenderedPrompt,
        *,
        max_tokens: int,
        grammar: OutputGrammar | None,
        cancel: threading.Event,
    ) -> None:
        self._parts = parts
        self._request = request
        self._prompt = prompt
        self._tokens = prompt.token_ids
        self._max_tokens = max_tokens
        self._grammar = grammar
        self._cancel = cancel
        self._match: PrefixMatch | None = None
        self._kv: KVBuffer | None = None
        self._prefilled = False
        self._committed = False
        self._written: list[BreakpointPosition] = []
        """The breakpoints the commit pinned (usage depends on them)."""
        self._retention: RetentionReport | None = None
        """What the commit did with a ``prompt_cache_retention: "24h"`` pin."""
        self._prefix_miss: str | None = None

    def run(self) -> Iterator[StreamEvent]:
        """``PromptUsage``, ``TextDelta`` s, one ``Result`` (nothing more once cancelled)."""
        self.match()
        try:
            if self._cancel.is_set():
                return
            self.gather()
            logits = self.prefill()
            if logits is None:
                return
            if self._prompt.breakpoint_positions:
                self.commit()
            yield PromptUsage(usage=self._usage(), prefix_miss=self.prefix_miss())
            outcomes: list[ChoiceOutcome] = []
            for index in range(self._request.sampling.n):
                # Choices share the prompt KV: decoding only writes positions
                # past the prompt, which the next choice overwrites.
                outcome = yield from self.decode(index, logits)
                self.commit()  # the prefill is done: store it even if cancelled now
                if self._cancel.is_set():
                    return
                outcomes.append(outcome)
            yield self._result(outcomes)
        except GeneratorExit:
            self.commit()  # closed by the consumer: the prefill is done, so still store it
            raise
        finally:
            self.release()

    def match(self) -> None:
        """Reference the longest cached prefix of the prompt for this tenant."""
        self._match = self._parts.cache.match(
            list(self._tokens), salt=self._request.tenant, cancel=self._cancel
        )

    def prefix_miss(self) -> str | None:
        """``x-promptcache-prefix-miss``: why the prompt's full blocks were not all read
        from the prefix cache, and the block and token where it left the longest cached
        prefix (a ``changed`` prompt is named by the section it changed in)."""
        if self._prefix_miss is not None or self._match is None or self._match.miss is None:
            return self._prefix_miss
        cache, match = self._parts.cache, self._match
        block = match.diverged_block
        token = block * cache.block_size
        cause: str = match.miss or "cold"
        if cause == "below_minimum" and token == 0:
            self._prefix_miss = (
                f"below_minimum; tokens={len(self._tokens)}; minimum={cache.min_cache_tokens}"
            )
            return self._prefix_miss
        if cause == "changed":
            tools_end, system_end = self._prompt.section_ends()
            section = (
                "tools" if token < tools_end else "system" if token < system_end else "messages"
            )
            cause = f"{section}_changed"
        self._prefix_miss = f"{cause}; block={block}; token={token}"
        return self._prefix_miss

    def gather(self) -> None:
        """A KV buffer for the request, holding the matched prefix's KV."""
        assert self._match is not None
        prompt, room = len(self._tokens), self._max_tokens
        self._kv = KVBuffer(
            self._parts.buffers, prompt + min(room, INITIAL_DECODE_ROOM), prompt + room
        )
        if self._match.num_tokens == 0:
            return  # nothing to copy: no turn on the model thread for it
        self._parts.executor.call(
            functools.partial(self._parts.cache.gather, self._match, self._kv.tensor)
        )

    def prefill(self) -> torch.Tensor | None:
        """Run the prompt past the cached prefix, chunk by chunk; the last token's logits,
        or None when cancelled first."""
        assert self._match is not None and self._kv is not None
        # A full hit still recomputes the last prompt token: its logits start
        # decoding. Its KV slot is rewritten with the same values.
        start = min(self._match.num_tokens, len(self._tokens) - 1)
        logits: torch.Tensor | None = None
        for chunk in self._parts.runtime.prompt_chunks(
            self._tokens[start:], self._kv.tensor, start
        ):
            if self._cancel.is_set():
                return None
            logits = self._parts.prefills.call(chunk, size=int(chunk[0].shape[0]))
        self._prefilled = True
        return logits

    def commit(self) -> None:
        """Store the prompt's KV blocks and breakpoint pins in the cache (once, when prefilled)."""
        if self._committed or not self._prefilled:
            return
        assert self._match is not None and self._kv is not None
        self._committed = True
        pins: list[tuple[int, PinTTL]] = list(self._prompt.breakpoint_positions)
        if self._request.transport.prompt_cache_retention == "24h":
            pins.append((len(self._tokens), "24h"))  # the implicitly cached prefix, whole
        report = self._parts.executor.call(
            functools.partial(
                self._parts.cache.commit,
                self._match,
                list(self._tokens),
                self._kv.tensor,
                pins=pins,
            )
        )
        # Usage counts breakpoint writes only: a retention pin is implicit caching.
        self._written = [
            BreakpointPosition(p, ttl) for p, ttl in report.pinned if ttl == "5m" or ttl == "1h"
        ]
        if self._request.transport.prompt_cache_retention == "24h":
            self._retention = _retention_report(report)

    def decode(
        self, index: int, prompt_logits: torch.Tensor
    ) -> Generator[TextDelta, None, ChoiceOutcome]:
        """Choice ``index``, from the prompt's last logits: its deltas, then its outcome."""
        assert self._kv is not None
        parts, request, kv = self._parts, self._request, self._kv
        outcome = ChoiceOutcome()
        sampler = TokenSampler(request.sampling, choice_index=index, prompt_ids=self._tokens)
        grammar = self._grammar
        constraint = parts.grammars.constraint(grammar) if grammar is not None else None
        stream = TextStream(parts.detokenizer, request.sampling.stop)
        capture = ToolCallCapture() if tool_calls_allowed(request) else None
        logits = prompt_logits
        position = len(self._tokens)
        # The next token is this step's argmax (so the lane may run its step ahead) for
        # greedy sampling with nothing in between: no grammar, bias or penalty.
        argmax_next = sampler.next_is_argmax and constraint is None
        with parts.decoder.decoding() as session:
            for step in range(self._max_tokens):
                if self._cancel.is_set():
                    return outcome
                with torch_threads(1):  # not the compute thread (torch_threads.py)
                    if constraint is not None:
                        logits = constraint.restrict(logits)
                    token = sampler.sample(logits)
                outcome.tokens += 1
                if token in parts.eos_ids:
                    outcome.finish_reason = "stop"
                    break
                if constraint is not None:
                    constraint.accept(token)
                delta = stream.push(token)
                if capture is not None:
                    delta = capture.feed(delta)
                if delta:
                    yield TextDelta(choice_index=index, text=delta)
                if stream.stopped_by is not None:
                    outcome.finish_reason, outcome.stop_sequence = "stop", stream.stopped_by
                    break
                if step + 1 == self._max_tokens:
                    break
                if step == 0:
                    self.commit()  # the first token is out: now the copy costs no TTFT
                if kv.tensor.shape[3] <= position:  # grow it (a copy: model-thread work)
                    parts.executor.call(functools.partial(kv.ensure, position + 1))
                logits = session.step(
                    token,
                    kv.tensor,
                    position,
                    then_greedy=argmax_next and step + 2 < self._max_tokens,
                )
                position += 1
        tail = stream.flush()
        outcome.text = stream.text
        if capture is not None:
            tail = capture.feed(tail)
            rest, outcome.text, outcome.tool_calls = capture.finish()
            tail += rest
            if outcome.tool_calls:
                outcome.finish_reason = "tool_calls"
        if tail:
            yield TextDelta(choice_index=index, text=tail)
        return outcome

    def release(self) -> None:
        """Drop the match's references and hand the KV buffer back (every path ends here)."""
        if self._match is not None:
            self._parts.cache.release(self._match)
        if self._kv is not None:
            self._kv.close()

    def _usage(self, output_tokens: int = 0) -> Usage:
        assert self._match is not None
        return account_prompt(
            prompt_tokens=len(self._tokens),
            cache_hit_tokens=self._match.num_tokens,
            breakpoints=self._written,
            output_tokens=output_tokens,
        )

    def _result(self, outcomes: list[ChoiceOutcome]) -> Result:
        return Result(
            id=f"pc-{uuid.uuid4().hex}",
            model=self._parts.served_name,
            created=int(time.time()),
            choices=tuple(
                Choice(
                    index=i,
                    text=o.text,
                    finish_reason=o.finish_reason,
                    stop_sequence=o.stop_sequence,
                    tool_calls=o.tool_calls,
                )
                for i, o in enumerate(outcomes)
            ),
            usage=self._usage(sum(o.tokens for o in outcomes)),
            retention=self._retention,
            prefix_miss=self.prefix_miss(),
        )


def _retention_report(report: CommitReport) -> RetentionReport:
    """Where the commit put the ``24h`` pin: pinned, refused by the cap, or uncached."""
    for position, ttl in report.pinned:
        if ttl == "24h":
            return RetentionReport(status="pinned", tokens=position)
    for position, ttl in report.pins_refused:
        if ttl == "24h":
            return RetentionReport(status="refused", tokens=position)
    uncached = [position for position, ttl in report.pins_uncached if ttl == "24h"]
    return RetentionReport(status="uncached", tokens=uncached[0] if uncached else 0)


class LockedDetokenizer:
    """A tokenizer's ``decode`` under the lock its other users share (see ``ChatRenderer``)."""

    def __init__(self, tokenizer: Detokenizer, lock: threading.Lock) -> None:
        self._tokenizer = tokenizer
        self._lock = lock

    def decode(self, token_ids: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._tokenizer.decode(token_ids, **kwargs)
