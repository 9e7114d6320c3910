from __future__ import annotations

import time

import pytest
import torch

from promptcache.prefix.pool import KVBlockPool, KVLayout
from tests.prefix.helpers import LAYOUT


def _pool(num_blocks: int, *, blocks_per_chunk: int = 3) -> KVBlockPool:
    block_bytes = 2 * LAYOUT.bytes_per_token
    return KVBlockPool(
        LAYOUT, block_size=2, num_blocks=num_blocks, chunk_bytes=blocks_per_chunk * block_bytes
    )


def test_smollm2_layout_is_46080_bytes_per_token() -> None:
    layout = KVLayout(num_layers=30, num_kv_heads=3, head_dim=64, dtype=torch.float32)
    assert layout.bytes_per_token == 46_080
    half = KVLayout(num_layers=30, num_kv_heads=3, head_dim=64, dtype=torch.float16)
    assert half.bytes_per_token == 23_040


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_layers": 0, "num_kv_heads": 1, "head_dim": 1},
        {"num_layers": 1, "num_kv_heads": -1, "head_dim": 1},
        {"num_layers": 1, "num_kv_heads": 1, "head_dim": True},
        {"num_layers": 1, "num_kv_heads": 1, "head_dim": 1, "dtype": torch.int64},
    ],
)
def test_layout_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="KVLayout"):
        KVLayout(**kwargs)  # type: ignore[arg-type]


def test_layout_check_names_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"out must have shape \[2, 2, 1, capacity, 4\]"):
        LAYOUT.check(torch.zeros(2, 2, 1, 8, 5), min_tokens=1, name="out")
    with pytest.raises(ValueError, match="holds 8 token positions, 9 are needed"):
        LAYOUT.check(torch.zeros(2, 2, 1, 8, 4), min_tokens=9, name="kv")


def test_allocates_lowest_slots_first_and_reuses_freed_ones() -> None:
    pool = _pool(6)
    assert pool.allocate(3) == [0, 1, 2]
    assert pool.allocate(2) == [3, 4]
    pool.free([1, 3])
    assert pool.num_free == 3
    assert pool.allocate(3) == [1, 3, 5]
    assert pool.allocate(1) == []
    assert pool.num_free == 0


def test_memory_is_allocated_lazily_per_chunk_and_returned_when_unused() -> None:
    pool = _pool(7, blocks_per_chunk=3)
    block_bytes = 2 * LAYOUT.bytes_per_token
    assert pool.allocated_bytes == 0
    slots = pool.allocate(1)
    assert pool.allocated_bytes == 3 * block_bytes
    more = pool.allocate(6)
    # Chunks of 3, 3 and a last one cut to the budget (1 block).
    assert pool.allocated_bytes == 7 * block_bytes
    pool.free(slots + more)
    pool.release_unused_chunks()
    assert pool.allocated_bytes == 0
    assert pool.allocate(2) == [0, 1]


def test_write_then_read_round_trips_across_chunks_and_gaps() -> None:
    pool = _pool(8, blocks_per_chunk=3)
    pool.allocate(8)
    slots = [1, 2, 3, 6, 0]  # a run that crosses a chunk boundary, a gap, a step back
    kv = torch.randn(2, 2, 1, 12, 4)
    pool.write(slots, kv, start=2)
    out = torch.full((2, 2, 1, 10, 4), float("nan"))
    pool.read(slots, out)
    assert torch.equal(out, kv[:, :, :, 2:12, :])
    # Reading a subset in another order gets exactly those blocks.
    pool.read([6, 1], out, start=0)
    assert torch.equal(out[:, :, :, 0:2, :], kv[:, :, :, 8:10, :])
    assert torch.equal(out[:, :, :, 2:4, :], kv[:, :, :, 2:4, :])


def test_zero_block_pool_hands_out_nothing() -> None:
    pool = _pool(0)
    assert pool.allocate(4) == []
    assert pool.num_free == 0


def _warming_pool(num_blocks: int, *, warm_ahead: int) -> KVBlockPool:
    block_bytes = 2 * LAYOUT.bytes_per_token
    return KVBlockPool(
        LAYOUT,
        block_size=2,
        num_blocks=num_blocks,
        chunk_bytes=3 * block_bytes,
        warm_ahead=warm_ahead,
    )


def _wait_for_bytes(pool: KVBlockPool, expected: int) -> int:
    """The pool's allocated bytes once the warming thread has caught up (at most 10 s)."""
    deadline = time.monotonic() + 10
    while pool.allocated_bytes != expected and time.monotonic() < deadline:
        time.sleep(0.005)
    return pool.allocated_bytes


def test_a_warming_pool_makes_its_next_chunks_ahead_within_the_budget() -> None:
    block_bytes = 2 * LAYOUT.bytes_per_token
    pool = _warming_pool(7, warm_ahead=2)  # chunks of 3, 3 and 1 block
    # A new pool warms its first chunks before anything is stored.
    assert _wait_for_bytes(pool, 6 * block_bytes) == 6 * block_bytes
    pool.allocate(1)  # chunk 0, warmed: now chunks 1 and 2 (cut to the budget) are asked
    assert _wait_for_bytes(pool, 7 * block_bytes) == 7 * block_bytes
    pool.allocate(6)  # chunks 1 and 2 are the warmed ones: nothing more is made
    assert pool.allocated_bytes == 7 * block_bytes
    assert pool.num_free == 0


def test_warmed_chunks_hold_what_is_written_and_go_back_with_unused_chunks() -> None:
    pool = _warming_pool(8, warm_ahead=3)
    block_bytes = 2 * LAYOUT.bytes_per_token
    assert _wait_for_bytes(pool, 8 * block_bytes) == 8 * block_bytes
    slots = pool.allocate(8)
    kv = torch.randn(2, 2, 1, 16, 4)
    pool.write(slots, kv, start=0)
    out = torch.full((2, 2, 1, 16, 4), float("nan"))
    pool.read(slots, out)
    assert torch.equal(out, kv)
    pool.free(slots)
    pool.release_unused_chunks()
    assert pool.allocated_bytes == 0


def test_warm_ahead_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="warm_ahead must be >= 0"):
        _warming_pool(4, warm_ahead=-1)
