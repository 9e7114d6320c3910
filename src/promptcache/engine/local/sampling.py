"""Choosing the next token, and turning generated tokens into safe text deltas.

* :class:`TokenSampler` -- greedy (argmax) or sampled decoding with
  ``temperature`` and ``top_p`` (nucleus), reproducible per request through its
  own ``torch.Generator`` seeded with ``seed`` (+ the choice index for n > 1).
  Greedy when ``temperature`` is 0, or when neither ``temperature`` nor
  ``top_p`` is given; ``top_p`` alone samples at temperature 1.
* :class:`TextStream` -- incremental detokenisation that never emits a broken
  UTF-8 character (a token may end mid-character) and holds back text that
  could be the beginning of a stop string, so a stop string is never streamed.
  The concatenation of every delta equals the final text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from promptcache.errors import RequestError
from promptcache.request import SamplingParams

DEFAULT_MAX_TOKENS = 1024
"""Cap on new tokens when the request gives no ``max_tokens`` (further capped by the context)."""

_REPLACEMENT_CHAR = "\ufffd"


class Detokenizer(Protocol):
    """A Hugging Face tokenizer's ``decode`` (its return type is wider than ``str``)."""

    def decode(self, token_ids: Any, **kwargs: Any) -> Any: ...


def validate_sampling(params: SamplingParams) -> None:
    """Raise RequestError for out-of-range sampling parameters."""
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


def is_greedy(params: SamplingParams) -> bool:
    return params.greedy


class TokenSampler:
    """Picks the next token from a 1-D logits tensor for one choice of one request."""

    def __init__(self, params: SamplingParams, *, choice_index: int = 0) -> None:
        self._greedy = is_greedy(params)
        self._temperature = 1.0 if params.temperature is None else params.temperature
        self._top_p = 1.0 if params.top_p is None else params.top_p
        self._generator = torch.Generator(device="cpu")
        if params.seed is not None:
            self._generator.manual_seed(params.seed + choice_index)
        else:
            self._generator.seed()

    def sample(self, logits: torch.Tensor) -> int:
        if self._greedy:
            return int(torch.argmax(logits).item())
        scaled = logits.float() / self._temperature
        probs = torch.softmax(scaled, dim=-1)
        if self._top_p < 1.0:
            probs = _nucleus(probs, self._top_p)
        return int(torch.multinomial(probs, 1, generator=self._generator).item())


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
