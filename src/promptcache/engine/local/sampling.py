"""Choosing the next token, and turning generated tokens into safe text deltas.

* :class:`TokenSampler` -- greedy (argmax) or sampled decoding, reproducible
  per request through its own ``torch.Generator`` seeded with ``seed`` (+ the
  choice index for n > 1). Greedy when ``temperature`` is 0, or when neither
  ``temperature`` nor ``top_p`` is given; ``top_p`` alone samples at
  temperature 1. The logits go through, in this order (the order of
  transformers' processors and warpers):

  1. ``logit_bias`` -- each listed token's bias added (-100 effectively bans it,
     +100 all but forces it);
  2. ``repetition_penalty`` -- every token in the prompt or the output so far:
     a positive logit divided by it, a negative one multiplied (CTRL's, as
     transformers' ``RepetitionPenaltyLogitsProcessor`` and vLLM);
  3. ``frequency_penalty`` / ``presence_penalty`` -- OpenAI's definition over the
     tokens generated so far: ``logit[j] -= count[j] * frequency_penalty +
     (count[j] > 0) * presence_penalty``;

  greedy decoding takes the argmax of that; sampling goes on with

  4. ``temperature``; 5. ``top_k`` (the k most likely, ties at the k-th kept);
  6. ``top_p`` (nucleus); 7. ``min_p`` (drop tokens less likely than ``min_p``
     times the most likely one).
* :class:`TextStream` -- incremental detokenisation that never emits a broken
  UTF-8 character (a token may end mid-character) and holds back text that
  could be the beginning of a stop string, so a stop string is never streamed.
  The concatenation of every delta equals the final text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from promptcache.errors import RequestError
from promptcache.request import SamplingParams

DEFAULT_MAX_TOKENS = 1024
"""Cap on new tokens when the request gives no ``max_tokens`` (further capped by the context)."""

_REPLACEMENT_CHAR = "\ufffd"


class Detokenizer(Protocol):
    """A Hugging Face tokenizer's ``decode`` (its return type is wider than ``str``)."""

    def decode(self, token_ids: Any, **kwargs: Any) -> Any: ...


def validate_sampling(params: SamplingParams, *, vocab_size: int | None = None) -> None:
    """Raise RequestError for out-of-range sampling parameters (``logit_bias`` token ids
    are checked against ``vocab_size`` when given)."""
    if params.temperature is not None and not 0.0 <= params.temperature <= 2.0:
        raise RequestError(
            f"temperature must be between 0 and 2, got {params.temperature}",
            param="temperature",
        )
    if params.top_p is not None and not 0.0 < params.top_p <= 1.0:
        raise RequestError(
            f"top_p must be in (0, 1], got {params.top_p}",
            param="top_p",
        )
    if params.max_tokens is not None and params.max_tokens < 1:
        raise RequestError(
            f"max_tokens must be at least 1, got {params.max_tokens}",
            param="max_tokens",
        )
    if params.n < 1:
        raise RequestError(f"n must be at least 1, got {params.n}", param="n")
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(params, name)
        if value is not None and not -2.0 <= value <= 2.0:
            raise RequestError(f"{name} must be between -2 and 2, got {value}", param=name)
    for name in ("reasoning_effort", "verbosity"):
        if getattr(params, name) is not None:
            raise RequestError(
                f"'{name}' is not supported by the local engine's model: it neither reasons "
                "nor has a verbosity setting. Leave it out (or serve a model that has it "
                "through an upstream).",
                param=name,
            )
    if params.min_p is not None and not 0.0 <= params.min_p <= 1.0:
        raise RequestError(f"min_p must be between 0 and 1, got {params.min_p}", param="min_p")
    if params.repetition_penalty is not None and not params.repetition_penalty > 0.0:
        raise RequestError(
            f"repetition_penalty must be greater than 0, got {params.repetition_penalty}",
            param="repetition_penalty",
        )
    for token, bias in params.logit_bias:
        if not -100.0 <= bias <= 100.0:
            raise RequestError(
                f"logit_bias values must be between -100 and 100, got {bias} for token {token}",
                param="logit_bias",
            )
        if token < 0 or (vocab_size is not None and token >= vocab_size):
            raise RequestError(
                f"logit_bias token id {token} is not in this model's vocabulary "
                f"(0..{'?' if vocab_size is None else vocab_size - 1})",
                param="logit_bias",
            )


def is_greedy(params: SamplingParams) -> bool:
    return params.greedy


def greedy_token(logits: torch.Tensor) -> int:
    """The index of the largest logit, the first on ties (as ``torch.argmax``).

    numpy's argmax over a float32 vocabulary takes ~6 us here; torch's CPU argmax
    ~100 us, a measurable share of a decode step."""
    if logits.dtype == torch.float32 and logits.dim() == 1 and not logits.requires_grad:
        return int(np.argmax(logits.numpy()))
    return int(torch.argmax(logits).item())


class TokenSampler:
    """Picks the next token from a 1-D logits tensor for one choice of one request.

    It remembers what it picked (the output so far, for the penalties); ``prompt_ids``
    are the prompt's tokens, which only ``repetition_penalty`` reads.
    """

    def __init__(
        self, params: SamplingParams, *, choice_index: int = 0, prompt_ids: Sequence[int] = ()
    ) -> None:
        self._greedy = is_greedy(params)
        self._temperature = 1.0 if params.temperature is None else params.temperature
        self._top_p = 1.0 if params.top_p is None else params.top_p
        self._top_k = params.top_k
        self._min_p = params.min_p
        self._bias = params.logit_bias
        self._frequency = params.frequency_penalty or 0.0
        self._presence = params.presence_penalty or 0.0
        self._repetition = params.repetition_penalty
        self._counts: torch.Tensor | None = None
        """Per-token counts of the output so far (float, vocabulary-sized), once needed."""
        self._seen: torch.Tensor | None = None
        """Tokens of the prompt and output so far (bool), for ``repetition_penalty``."""
        self._uncounted: list[int] = []
        self._unseen: list[int] = list(prompt_ids) if self._repetition is not None else []
        self._generator = torch.Generator(device="cpu")
        if params.seed is not None:
            self._generator.manual_seed(params.seed + choice_index)
        else:
            self._generator.seed()

    @property
    def next_is_argmax(self) -> bool:
        """Whether :meth:`sample` is :func:`greedy_token` of the logits as they come."""
        return self._greedy and not self._adjusts_logits

    @property
    def _adjusts_logits(self) -> bool:
        return bool(self._bias or self._repetition is not None or self._frequency or self._presence)

    def sample(self, logits: torch.Tensor) -> int:
        processed = self.process(logits)
        if self._greedy:
            token = greedy_token(processed)
        else:
            probs = self.probabilities(processed)
            token = int(torch.multinomial(probs, 1, generator=self._generator).item())
        self.observe(token)
        return token

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """Steps 1-3: the logits after ``logit_bias`` and the penalties (a new tensor
        when any applies; ``logits`` itself otherwise)."""
        if not self._adjusts_logits:
            return logits
        out = logits.float().clone()
        if self._bias:
            ids = torch.tensor([t for t, _ in self._bias], dtype=torch.long)
            out.index_add_(0, ids, torch.tensor([b for _, b in self._bias], dtype=out.dtype))
        if self._repetition is not None:
            self._seen = _mark(self._seen, self._unseen, out.shape[0], torch.bool)
            penalised = torch.where(out < 0, out * self._repetition, out / self._repetition)
            out = torch.where(self._seen, penalised, out)
        if self._frequency or self._presence:
            counts = self._counts = _mark(self._counts, self._uncounted, out.shape[0], out.dtype)
            out -= counts * self._frequency + (counts > 0).to(out.dtype) * self._presence
        return out

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Steps 4-7 on processed logits: the distribution sampling draws from."""
        scaled = logits.float() / self._temperature
        if self._top_k is not None and self._top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, self._top_k).values[-1]
            scaled = scaled.masked_fill(scaled < kth, -float("inf"))
        probs = torch.softmax(scaled, dim=-1)
        if self._top_p < 1.0:
            probs = _nucleus(probs, self._top_p)
        if self._min_p is not None:
            probs = probs.masked_fill(probs < self._min_p * probs.max(), 0.0)
            probs = probs / probs.sum()
        return probs

    def observe(self, token: int) -> None:
        """Count ``token`` as generated (``sample`` does this for the token it picks)."""
        if self._frequency or self._presence:
            self._uncounted.append(token)
        if self._repetition is not None:
            self._unseen.append(token)


def _mark(
    table: torch.Tensor | None, pending: list[int], vocab: int, dtype: torch.dtype
) -> torch.Tensor:
    """``table`` (created with ``vocab`` entries when None) with the ``pending`` token ids
    added -- counted in a float table, set in a bool one -- and ``pending`` emptied."""
    if table is None:
        table = torch.zeros(vocab, dtype=dtype)
    ids = [t for t in pending if 0 <= t < vocab]
    pending.clear()
    if ids:
        index = torch.tensor(ids, dtype=torch.long)
        if dtype == torch.bool:
            table[index] = True
        else:
            table.index_add_(0, index, torch.ones(len(ids), dtype=dtype))
    return table


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest set whose probability reaches ``top_p``."""
    sorted_probs, order = torch.sort(probs, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    sorted_probs[mass_before >= top_p] = 0.0  # the top token always survives
    kept = torch.zeros_like(probs)
    kept.scatter_(-1, order, sorted_probs)
    return kept / kept.sum()


class TextStream:
    """Generated token ids in, text deltas out, stopping at the first stop string."""

    def __init__(self, tokenizer: Detokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stops = tuple(s for s in stop if s)
        self._ids: list[int] = []
        # Decoding a window that starts a few tokens back keeps spacing right for
        # tokenizers whose decode of a lone token drops a leading space.
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""
        self._emitted = 0
        self.stopped_by: str | None = None
        """The stop string that ended the text, once one has."""

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return self._text[: self._emitted]

    @property
    def token_count(self) -> int:
        return len(self._ids)

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that is now safe to emit."""
        if self.stopped_by is not None:
            raise RuntimeError("TextStream already stopped")
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        window = self._decode(self._ids[self._prefix_offset :])
        if len(window) > len(prefix) and not window.endswith(_REPLACEMENT_CHAR):
            self._text += window[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
        return self._release(final=False)

    def flush(self) -> str:
        """Generation ended (EOS or length): return every held-back character."""
        if self.stopped_by is not None:
            return ""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        window = self._decode(self._ids[self._prefix_offset :])
        self._text += window[len(prefix) :]
        self._prefix_offset = self._read_offset = len(self._ids)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        start = self._emitted
        stop_at = self._find_stop()
        if stop_at is not None:
            self._emitted = stop_at
            self._text = self._text[:stop_at]
            return self._text[start:]
        end = len(self._text) if final else len(self._text) - self._held_back()
        self._emitted = max(start, end)
        return self._text[start : self._emitted]

    def _find_stop(self) -> int | None:
        best: int | None = None
        for stop in self._stops:
            # Text before _emitted never holds the start of a stop string
            # (it would have been held back), so searching from there suffices.
            index = self._text.find(stop, self._emitted)
            if index != -1 and (best is None or index < best):
                best, self.stopped_by = index, stop
        return best

    def _held_back(self) -> int:
        """Length of the longest unemitted suffix that begins some stop string."""
        pending = len(self._text) - self._emitted
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, pending), longest, -1):
                if self._text.endswith(stop[:length]):
                    longest = length
                    break
        return longest

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))
