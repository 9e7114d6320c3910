"""The disk tier under the RAM tier: spill, promote, restart, LRU, isolation, damage.

Tiny KV layout (``helpers.LAYOUT``), 4-token blocks; every test has its own
directory under ``tmp_path``. Prefix-tagged KV (``helpers.kv_for``) lets each
test check that promoted KV is this very prefix's, position by position.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.prefix import PrefixCache, PrefixCacheConfig, hashing
from promptcache.prefix.disk import blockfile, clear_directory, describe_directory
from promptcache.prefix.disk import tier as tier_module
from promptcache.prefix.disk.directory import block_path
from promptcache.result import KVTierSnapshot
from tests.prefix.helpers import (
    BLOCK,
    BLOCK_BYTES,
    LAYOUT,
    empty_out,
    hit_tokens,
    kv_for,
    make_cache,
    store,
)

A = list(range(100, 132))  # 8 blocks
B = list(range(200, 232))
C = list(range(300, 332))


@pytest.fixture
def open_caches() -> Iterator[list[PrefixCache]]:
    caches: list[PrefixCache] = []
    yield caches
    for cache in caches:
        cache.close()


Factory = Callable[..., PrefixCache]


@pytest.fixture
def disk_cache(tmp_path: Path, open_caches: list[PrefixCache]) -> Factory:
    """``disk_cache(**options)``: a cache over ``tmp_path/kv`` (closed after the test)."""

    def factory(
        *, budget_blocks: int = 8, disk_bytes: int = 1 << 20, **options: Any
    ) -> PrefixCache:
        cache = make_cache(
            budget_blocks=budget_blocks,
            disk_path=str(tmp_path / "kv"),
            disk_bytes=disk_bytes,
            **options,
        )
        open_caches.append(cache)
        return cache

    return factory


def flushed(cache: PrefixCache) -> PrefixCache:
    assert cache.disk is not None and cache.disk.wait_idle()
    return cache


def gathered(cache: PrefixCache, tokens: Sequence[int], *, salt: str = "") -> torch.Tensor:
    match = cache.match(tokens, salt=salt)
    try:
        out = empty_out(len(tokens))
        cache.gather(match, out)
        return out[:, :, :, : match.num_tokens, :]
    finally:
        cache.release(match)


def tier(cache: PrefixCache, name: str) -> KVTierSnapshot:
    return next(t for t in cache.stats().tiers if t.tier == name)


def block_files(cache: PrefixCache, tokens: Sequence[int], salt: str = "") -> list[Path]:
    assert cache.disk is not None
    root = hashing.root_hash("tiny", salt)
    hashes = hashing.hash_prompt_blocks(tokens, block_size=BLOCK, root=root)
    return [block_path(cache.disk.directory, h) for h in hashes]


def restart(cache: PrefixCache, factory: Factory, **options: Any) -> PrefixCache:
    flushed(cache).close()
    return factory(**options)


def test_evicted_blocks_are_promoted_back_from_disk(disk_cache: Factory) -> None:
    cache = disk_cache()
    store(cache, A)
    store(flushed(cache), B)  # the RAM tier holds 8 blocks: A goes down to disk
    flushed(cache)
    assert hit_tokens(cache, A) == len(A)
    assert torch.equal(gathered(cache, A), kv_for(A))
    ram, disk = tier(cache, "ram"), tier(cache, "disk")
    assert ram.promotions == 8 and disk.hits == 8
    assert ram.demotions >= 8 and ram.evictions >= 8
    assert disk.bytes_read > 0 and disk.read_bytes_per_second > 0
    assert cache.blocks_in_use == 0 and cache.claims_in_flight == 0


def test_promotion_continues_a_chain_partly_in_ram(disk_cache: Factory) -> None:
    cache = disk_cache(budget_blocks=12)
    store(cache, A)
    store(flushed(cache), B)  # 16 blocks for 12 slots: A's tail (LRU first) goes to disk
    flushed(cache)
    before = tier(cache, "ram")
    assert 0 < before.blocks < 16
    assert hit_tokens(cache, A) == len(A)
    assert torch.equal(gathered(cache, A), kv_for(A))
    assert tier(cache, "ram").promotions > 0


def test_a_restarted_cache_reads_the_disk_tier(disk_cache: Factory) -> None:
    cache = disk_cache()
    store(cache, A)
    cache = restart(cache, disk_cache)
    assert tier(cache, "disk").blocks == 8
    assert tier(cache, "ram").blocks == 0  # nothing read until a match needs it
    assert hit_tokens(cache, A) == len(A)
    assert torch.equal(gathered(cache, A), kv_for(A))


def test_another_tenant_never_reads_a_tenants_blocks(disk_cache: Factory) -> None:
    cache = disk_cache()
    store(cache, A, salt="tenant-a")
    cache = restart(cache, disk_cache)
    match = cache.match(A, salt="tenant-b")
    cache.release(match)
    assert match.num_tokens == 0
    assert tier(cache, "disk").hits == 0
    assert hit_tokens(cache, A, salt="tenant-a") == len(A)


def test_the_disk_tier_evicts_least_recently_used_blocks(disk_cache: Factory) -> None:
    probe = disk_cache()
    store(probe, A)
    file_bytes = tier(flushed(probe), "disk").bytes_used // 8
    assert probe.disk is not None
    probe.disk.clear()
    probe.close()
    cache = disk_cache(budget_blocks=64, disk_bytes=16 * file_bytes)  # two prompts' worth
    store(cache, A)
    store(flushed(cache), B)
    assert hit_tokens(flushed(cache), A) == len(A)  # A is now more recent than B
    store(cache, C)
    disk = tier(flushed(cache), "disk")
    assert disk.blocks == 16 and disk.bytes_used <= disk.bytes_budget
    assert disk.evictions == 8
    assert all(path.is_file() for path in block_files(cache, A))
    assert not any(path.exists() for path in block_files(cache, B))
    cache = restart(cache, disk_cache, budget_blocks=64, disk_bytes=16 * file_bytes)
    assert hit_tokens(cache, A) == len(A) and hit_tokens(cache, C) == len(C)
    assert hit_tokens(cache, B) == 0


def test_a_fingerprint_mismatch_discards_the_tier(
    tmp_path: Path, open_caches: list[PrefixCache], caplog: pytest.LogCaptureFixture
) -> None:
    def build(model_id: str, extra: dict[str, object]) -> PrefixCache:
        config = PrefixCacheConfig(
            block_size=BLOCK, kv_cache_bytes=1 << 16, min_cache_tokens=8, disk_path=str(tmp_path)
        )
        cache = PrefixCache(config, LAYOUT, model_id=model_id, fingerprint=extra)
        open_caches.append(cache)
        return cache

    first = build("tiny", {"chat_template": "v1"})
    store(first, A)
    flushed(first).close()
    with caplog.at_level(logging.WARNING, logger="promptcache.prefix.disk"):
        second = build("tiny", {"chat_template": "v2"})
    warnings = [r for r in caplog.records if "discarding" in r.getMessage()]
    assert len(warnings) == 1 and "chat_template" in warnings[0].getMessage()
    assert tier(second, "disk").blocks == 0
    assert hit_tokens(second, A) == 0
    assert not list((tmp_path / "blocks").rglob("*.safetensors"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_a_damaged_block_file_is_refused_never_served(disk_cache: Factory, damage: str) -> None:
    cache = disk_cache()
    store(cache, A)
    cache = restart(cache, disk_cache)
    files = block_files(cache, A)
    victim = files[5]
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[-3] ^= 0x40  # one bit of the tensor bytes
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:  # another block's (valid) file under this block's name
        victim.write_bytes(files[6].read_bytes())
    # Blocks 0..4 are good (20 tokens >= the 8-token minimum); block 5 is refused.
    assert hit_tokens(cache, A) == 5 * BLOCK
    assert torch.equal(gathered(cache, A), kv_for(A)[:, :, :, : 5 * BLOCK, :])
    disk = tier(cache, "disk")
    assert disk.corrupt_blocks == 1
    assert not victim.exists()


def test_leftovers_of_a_killed_writer_are_swept_on_start(disk_cache: Factory) -> None:
    cache = disk_cache()
    store(cache, A)
    files = block_files(flushed(cache), A)
    cache.close()
    torn = files[0].with_name(files[0].name + ".tmp")
    torn.write_bytes(b"half a block")
    orphan = files[0].with_name("ab" * 32 + ".safetensors")
    orphan.write_bytes(files[1].read_bytes())
    files[7].unlink()  # an index row whose file is gone
    cache = disk_cache()
    assert not torn.exists() and not orphan.exists()
    assert tier(cache, "disk").blocks == 7
    assert hit_tokens(cache, A) == 7 * BLOCK


def test_an_unreadable_index_starts_the_tier_afresh(
    disk_cache: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    cache = disk_cache()
    store(cache, A)
    assert cache.disk is not None
    index = cache.disk.directory / "index.sqlite3"
    files = block_files(flushed(cache), A)
    cache.close()
    for suffix in ("-wal", "-shm"):
        index.with_name(index.name + suffix).unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="promptcache.prefix.disk"):
        cache = disk_cache()
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert tier(cache, "disk").blocks == 0 and hit_tokens(cache, A) == 0
    assert not any(path.exists() for path in files)
    store(cache, A)
    assert tier(flushed(cache), "disk").blocks == 8


def test_a_full_write_queue_drops_blocks_not_the_request(
    disk_cache: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_write = blockfile.write_atomically

    def blocked_write(path: Path, data: bytes) -> None:
        assert gate.wait(60), "the test never opened the gate"
        real_write(path, data)

    monkeypatch.setattr(tier_module, "write_atomically", blocked_write)

    cache = disk_cache(budget_blocks=64, disk_write_queue_bytes=BLOCK_BYTES)  # one block
    done = threading.Event()
    results: list[int] = []

    def request() -> None:
        results.append(store(cache, A))
        done.set()

    worker = threading.Thread(target=request)
    worker.start()
    # The writer is stuck on its first block; the request must still finish.
    assert done.wait(30), "the request waited for the disk writer"
    assert results == [0] and hit_tokens(cache, A) == len(A)
    drops = tier(cache, "disk").write_queue_drops
    assert drops >= 6  # one block being written, one queued, the rest dropped
    gate.set()
    worker.join()
    disk = tier(flushed(cache), "disk")
    assert disk.blocks == 8 - drops and disk.write_queue_drops == drops


def test_pins_survive_eviction_pressure_and_the_rest_goes_to_disk(disk_cache: Factory) -> None:
    cache = disk_cache(budget_blocks=16, max_pinned_fraction=0.5)
    store(cache, A, pins=[(len(A), "1h")])
    for tokens in (B, C, [t + 1000 for t in B], [t + 1000 for t in C]):
        store(flushed(cache), tokens)
    flushed(cache)
    promoted = tier(cache, "ram").promotions
    assert hit_tokens(cache, A) == len(A)
    assert tier(cache, "ram").promotions == promoted  # A never left RAM
    assert cache.stats().blocks_pinned == 8
    assert hit_tokens(cache, B) == len(B)  # evicted, and read back from disk
    assert tier(cache, "ram").promotions > promoted


def test_clear_empties_both_tiers_and_the_cli_refuses_a_tier_in_use(disk_cache: Factory) -> None:
    cache = disk_cache()
    store(cache, A)
    assert cache.disk is not None
    directory = cache.disk.directory
    flushed(cache)
    with pytest.raises(ValueError, match="in use by another promptcache process"):
        clear_directory(directory)
    with pytest.raises(ValueError, match="in use"):
        disk_cache()  # a second cache on the same directory
    assert describe_directory(directory).blocks == 8
    cache.clear()
    assert tier(cache, "disk").blocks == 0 and hit_tokens(cache, A) == 0
    store(cache, B)
    flushed(cache).close()
    removed = clear_directory(directory)
    assert removed.blocks == 8 and removed.bytes > 0
    assert describe_directory(directory).blocks == 0
    assert hit_tokens(disk_cache(), B) == 0


def test_the_disk_tier_is_off_by_default_and_with_zero_bytes(tmp_path: Path) -> None:
    assert make_cache().disk is None
    assert make_cache(disk_path=str(tmp_path), disk_bytes=0).disk is None
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="disk_bytes"):
        PrefixCacheConfig(disk_path=str(tmp_path), disk_bytes=-1)
    with pytest.raises(ValueError, match="smaller than one KV block"):
        make_cache(disk_path=str(tmp_path / "kv"), disk_bytes=BLOCK_BYTES - 1)
    assert not (tmp_path / "kv").exists()
