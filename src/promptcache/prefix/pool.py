"""KV storage for cached blocks: fixed-size slots in lazily allocated tensor chunks.

The pool knows nothing of hashes, prompts or eviction; it hands out slot
numbers and copies KV between a request's buffer and those slots. A slot holds
one block (``block_size`` token positions) for every layer, key/value and head.

Storage is a list of chunks, each ``[num_layers, 2, num_kv_heads,
blocks_per_chunk * block_size, head_dim]`` -- the request KV layout with the
token axis cut into slots. Chunks are created on first use, so a 1 GiB budget
costs nothing until blocks are actually stored. Slots are handed out lowest
first, so the blocks of one prompt usually land in consecutive slots and a
read or write is a handful of large strided copies instead of one per block.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from promptcache.prefix.chunk_warmer import ChunkWarmer

DEFAULT_CHUNK_BYTES = 32 << 20
KV_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""``--kv-dtype`` names: the dtype cached KV is stored in and the engine attends over.
A 16-bit dtype halves the bytes per token (twice the tokens per GiB); keys and
values are rounded to it when first written, on a miss as on a hit, so both
attend over rounded values (see ``PrefixCacheConfig.kv_dtype`` for what that
guarantees)."""


@dataclass(frozen=True, kw_only=True)
class KVLayout:
    """Shape of one request's KV tensor ``[num_layers, 2, num_kv_heads, capacity, head_dim]``.

    Dim 1 holds keys (after RoPE) at 0 and values at 1; token positions run
    along dim 3.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KVLayout.{name} must be a positive integer, got {value!r}")
        if self.dtype not in KV_DTYPES.values():
            raise ValueError(
                f"KVLayout.dtype must be one of {', '.join(KV_DTYPES)}, got {self.dtype}"
            )

    @property
    def bytes_per_token(self) -> int:
        """Bytes one cached token takes in this layout's dtype (what budgets and stats count)."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * self.dtype.itemsize

    def check(self, kv: torch.Tensor, *, min_tokens: int, name: str) -> None:
        """Raise ValueError unless ``kv`` has this layout and room for ``min_tokens`` positions."""
        expected = (self.num_layers, 2, self.num_kv_heads)
        if kv.dim() != 5 or tuple(kv.shape[:3]) != expected or kv.shape[4] != self.head_dim:
            raise ValueError(
                f"{name} must have shape [{self.num_layers}, 2, {self.num_kv_heads}, "
                f"capacity, {self.head_dim}], got {list(kv.shape)}"
            )
        if kv.shape[3] < min_tokens:
            raise ValueError(f"{name} holds {kv.shape[3]} token positions, {min_tokens} are needed")


class KVBlockPool:
    """``num_blocks`` slots of ``block_size`` tokens each, allocated lowest-slot first.

    Not thread-safe on its own: the prefix cache serialises ``allocate`` and
    ``free`` under its lock. ``read``/``write`` may run outside that lock on
    slots the caller owns, because distinct slots never share memory.
    """

    def __init__(
        self,
        layout: KVLayout,
        *,
        block_size: int,
        num_blocks: int,
        chunk_bytes: int | None = None,
        warm_ahead: int = 0,
    ) -> None:
        """``warm_ahead``: chunks past the newest one to make and fault in beforehand, on an
        idle-priority thread (``chunk_warmer.py`` says why), within the budget."""
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        if warm_ahead < 0:
            raise ValueError(f"warm_ahead must be >= 0, got {warm_ahead}")
        self.layout = layout
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.block_bytes = block_size * layout.bytes_per_token
        chunk_bytes = DEFAULT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        self.blocks_per_chunk = max(1, min(num_blocks, chunk_bytes // self.block_bytes))
        self._chunks: list[torch.Tensor | None] = []
        self._used_per_chunk: list[int] = []
        # Slots below the high-water mark that are free, as a min-heap; slots at
        # or above it were never handed out. This keeps construction O(1) even
        # for a budget of millions of tiny blocks.
        self._free: list[int] = []
        self._high_water = 0
        self._warm_ahead = warm_ahead
        self._warmer = ChunkWarmer(self._new_chunk) if warm_ahead and num_blocks else None
        self._ask_ahead(-1)  # the first chunks too: a new pool's first prompt faults none

    @property
    def num_free(self) -> int:
        return len(self._free) + self.num_blocks - self._high_water

    @property
    def allocated_bytes(self) -> int:
        """Bytes of tensor memory currently held (whole chunks, used or not, and warmed ones)."""
        held = sum(
            chunk.numel() * chunk.element_size() for chunk in self._chunks if chunk is not None
        )
        return held + (self._warmer.ready_bytes if self._warmer is not None else 0)

    def allocate(self, count: int) -> list[int]:
        """Up to ``count`` free slots, ascending; fewer (maybe none) when the pool is full."""
        slots: list[int] = []
        while len(slots) < count and self._free:
            slots.append(heapq.heappop(self._free))
        take = min(count - len(slots), self.num_blocks - self._high_water)
        slots.extend(range(self._high_water, self._high_water + take))
        self._high_water += take
        for slot in slots:
            self._chunk_for(slot)
            self._used_per_chunk[slot // self.blocks_per_chunk] += 1
        slots.sort()
        return slots

    def free(self, slots: Sequence[int]) -> None:
        for slot in slots:
            heapq.heappush(self._free, slot)
            self._used_per_chunk[slot // self.blocks_per_chunk] -= 1

    def release_unused_chunks(self) -> None:
        """Give back the memory of chunks with no slot in use (after a clear)."""
        for index, used in enumerate(self._used_per_chunk):
            if used == 0:
                self._chunks[index] = None
        if self.num_free == self.num_blocks:
            self._free.clear()
            self._high_water = 0
        if self._warmer is not None:
            self._warmer.drop()

    def write(self, slots: Sequence[int], kv: torch.Tensor, *, start: int) -> None:
        """Copy ``len(slots)`` blocks of ``kv`` token positions, from ``start`` on, into slots."""
        with torch.no_grad():
            for chunk, first_slot, offset, count in self._runs(slots):
                tokens = count * self.block_size
                src = kv[:, :, :, start + offset : start + offset + tokens, :]
                chunk[:, :, :, first_slot : first_slot + tokens, :].copy_(src)

    def read(self, slots: Sequence[int], out: torch.Tensor, *, start: int = 0) -> None:
        """Copy the slots into token positions ``start ..`` of ``out``, in order."""
        with torch.no_grad():
            for chunk, first_slot, offset, count in self._runs(slots):
                tokens = count * self.block_size
                dst = out[:, :, :, start + offset : start + offset + tokens, :]
                dst.copy_(chunk[:, :, :, first_slot : first_slot + tokens, :])

    def _runs(self, slots: Sequence[int]) -> Iterator[tuple[torch.Tensor, int, int, int]]:
        """Group consecutive slots of one chunk: (chunk, first token in chunk, token offset, n)."""
        per_chunk = self.blocks_per_chunk
        position = 0
        for _, group in itertools.groupby(
            enumerate(slots), key=lambda item: (item[1] - item[0], item[1] // per_chunk)
        ):
            run = [slot for _, slot in group]
            chunk = self._chunk_for(run[0])
            yield chunk, (run[0] % per_chunk) * self.block_size, position, len(run)
            position += len(run) * self.block_size

    def _chunk_for(self, slot: int) -> torch.Tensor:
        index = slot // self.blocks_per_chunk
        while len(self._chunks) <= index:
            self._chunks.append(None)
            self._used_per_chunk.append(0)
        chunk = self._chunks[index]
        if chunk is None:
            chunk = self._warmer.take(index) if self._warmer is not None else None
            if chunk is None:
                chunk = self._new_chunk(index)
            self._chunks[index] = chunk
            self._ask_ahead(index)
        return chunk

    def _ask_ahead(self, newest: int) -> None:
        """Have the ``warm_ahead`` chunks after chunk ``newest`` warmed, within the budget."""
        if self._warmer is None:
            return
        chunks = -(-self.num_blocks // self.blocks_per_chunk)
        for ahead in range(newest + 1, min(newest + 1 + self._warm_ahead, chunks)):
            if ahead >= len(self._chunks) or self._chunks[ahead] is None:
                self._warmer.ask(ahead)

    def _new_chunk(self, index: int) -> torch.Tensor:
        """Chunk ``index``'s storage (the last chunk cut to the budget: the pool never
        exceeds it)."""
        layout = self.layout
        blocks = min(self.blocks_per_chunk, self.num_blocks - index * self.blocks_per_chunk)
        return torch.empty(
            (layout.num_layers, 2, layout.num_kv_heads, blocks * self.block_size, layout.head_dim),
            dtype=layout.dtype,
            device=layout.device,
        )
