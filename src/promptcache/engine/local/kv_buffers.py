"""Request KV buffers: one tensor per request, grown as decoding needs, reused when idle."""

from __future__ import annotations

import threading

import torch

from promptcache.model.runtime import LlamaRuntime


class KVBuffers:
    """Idle request KV buffers kept for reuse (up to ``keep_bytes``), thread-safe.

    A fresh multi-megabyte buffer costs zeroing and page faults on every
    request -- a visible share of a cache hit's time to first token. A reused
    buffer needs neither: stale contents are harmless because every position
    is written (gather, prefill, decode) before attention reads it.
    """

    def __init__(
        self,
        runtime: LlamaRuntime,
        *,
        dtype: torch.dtype | None = None,
        keep_bytes: int = 256 << 20,
    ) -> None:
        """Buffers for ``runtime``'s KV in ``dtype`` (``--kv-dtype``; default: the model's).

        Every request's buffer -- hit or miss, cache on or off -- has this one
        dtype, so keys and values are rounded the same way whichever path
        computed them, and a gather from the prefix cache is a plain copy.
        """
        self._shape = (runtime.num_layers, 2, runtime.num_kv_heads, runtime.head_dim)
        self._dtype = runtime.dtype if dtype is None else dtype
        self._keep_bytes = keep_bytes
        self._idle: list[torch.Tensor] = []
        self._lock = threading.Lock()

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def take(self, capacity: int) -> torch.Tensor:
        with self._lock:
            fitting = [
                i for i, t in enumerate(self._idle) if capacity <= t.shape[3] <= 2 * capacity + 256
            ]
            if fitting:
                best = min(fitting, key=lambda i: self._idle[i].shape[3])
                return self._idle.pop(best)
        layers, two, heads, dim = self._shape
        return torch.empty((layers, two, heads, capacity, dim), dtype=self._dtype)

    def give(self, tensor: torch.Tensor) -> None:
        with self._lock:
            self._idle.append(tensor)
            while sum(_nbytes(t) for t in self._idle) > self._keep_bytes:
                self._idle.pop(0)  # oldest first


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class KVBuffer:
    """A request's KV tensor, grown (doubling, up to ``limit`` positions) as decoding needs."""

    def __init__(self, buffers: KVBuffers, capacity: int, limit: int) -> None:
        self._buffers = buffers
        self._limit = limit
        self.tensor = buffers.take(capacity)

    def ensure(self, positions: int) -> None:
        capacity = self.tensor.shape[3]
        if positions <= capacity:
            return
        grown = self._buffers.take(min(max(positions, 2 * capacity), self._limit))
        grown[:, :, :, :capacity].copy_(self.tensor)
        self._buffers.give(self.tensor)
        self.tensor = grown

    def close(self) -> None:
        self._buffers.give(self.tensor)
