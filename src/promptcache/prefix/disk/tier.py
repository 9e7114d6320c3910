"""The disk tier: KV blocks under the RAM tier, in safetensors files with a SQLite index.

The prefix cache hands blocks down (:meth:`DiskTier.offer`): each new block as it
is committed (write-through, so a restart or a crash loses nothing that was
written) and each evicted block not stored yet. Offers only copy the block into
a bounded queue; one writer thread serialises, writes and indexes them, evicting
least-recently-used files to stay within ``budget_bytes``. A full queue drops
the block (counted), never slows the request.

A match that runs past the RAM tier asks :meth:`run_after` for the stored blocks
that continue its chain -- confirmed by parent hash and token ids, from the
in-memory copy of the index, no I/O -- and :meth:`load` reads each file back,
checksum verified. Chain hashes are salted by tenant at the root, so another
tenant's blocks never continue a chain.

On start the directory is locked (one process per directory), the index is
read, and leftovers of a killed writer are swept: temporary files, files with
no index row, rows with no file. Blocks written under another model
fingerprint are discarded with one log line.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from promptcache.prefix.disk.blockfile import (
    CorruptBlockError,
    encode_block,
    read_block_file,
    write_atomically,
)
from promptcache.prefix.disk.directory import DirectoryLock, block_path, remove_block_files
from promptcache.prefix.disk.fingerprint import ModelFingerprint
from promptcache.prefix.disk.index import DiskEntry
from promptcache.prefix.disk.startup import open_index
from promptcache.result import KVTierSnapshot

logger = logging.getLogger("promptcache.prefix.disk")

_TOUCH_FLUSH_SECONDS = 1.0
"""How often the writer records hits' recency in the index (LRU order across restarts)."""


@dataclass(eq=False, kw_only=True)
class _Pending:
    entry: DiskEntry
    kv: torch.Tensor
    generation: int


class DiskTier:
    """Blocks of ``block_shape`` KV (``dtype``) under ``directory``, within ``budget_bytes``."""

    def __init__(
        self,
        directory: Path,
        *,
        budget_bytes: int,
        queue_bytes: int,
        block_shape: tuple[int, ...],
        dtype: torch.dtype,
        fingerprint: ModelFingerprint,
    ) -> None:
        self.directory = directory
        self.budget_bytes = budget_bytes
        self.block_shape = block_shape
        self.dtype = dtype
        self.fingerprint = fingerprint
        self._digest = fingerprint.digest
        block_bytes = max(1, torch.finfo(dtype).bits // 8)
        for size in block_shape:
            block_bytes *= size
        if budget_bytes < block_bytes:
            raise ValueError(
                f"the KV disk tier's budget ({budget_bytes:,} bytes) is smaller than one KV "
                f"block ({block_bytes:,} bytes); raise --kv-disk-bytes, or 0 for no disk tier"
            )
        directory.mkdir(parents=True, exist_ok=True)
        self._dir_lock = DirectoryLock(directory)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, DiskEntry] = OrderedDict()
        """Stored blocks, least recently used first."""
        self._pending: dict[bytes, _Pending] = {}
        self._touched: dict[bytes, float] = {}
        self._used_bytes = 0
        self._generation = 0
        self._closed = False
        self._queue: queue.Queue[_Pending | None] = queue.Queue(
            maxsize=max(1, queue_bytes // block_bytes)
        )
        self.writes = self.hits = self.evictions = self.drops = self.corrupt = 0
        self._failing = False
        """The last write failed (logged once per streak: a full disk would flood the log)."""
        self.bytes_read = 0
        self.read_seconds = 0.0
        try:
            self._index, entries = open_index(directory, fingerprint)
        except BaseException:
            self._dir_lock.release()
            raise
        for entry in entries:
            self._entries[entry.block_hash] = entry
            self._used_bytes += entry.nbytes
        self._discard_files(self._make_room(0))  # the budget may have shrunk since
        self._writer = threading.Thread(
            target=self._run, name="promptcache-kv-disk-writer", daemon=True
        )
        self._writer.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- lookups (under the prefix cache's lock: memory only) -------------------------

    def run_after(
        self,
        hashes: Sequence[bytes],
        tokens: Sequence[int],
        *,
        start: int,
        parent_hash: bytes,
        block_size: int,
    ) -> list[DiskEntry]:
        """The stored blocks continuing the chain at block ``start`` (after ``parent_hash``)."""
        run: list[DiskEntry] = []
        parent = parent_hash
        with self._lock:
            for index in range(start, len(hashes)):
                entry = self._entries.get(hashes[index])
                if entry is None:
                    pending = self._pending.get(hashes[index])
                    entry = pending.entry if pending is not None else None
                block_tokens = tuple(tokens[index * block_size : (index + 1) * block_size])
                if entry is None or entry.parent_hash != parent or entry.token_ids != block_tokens:
                    break
                run.append(entry)
                parent = entry.block_hash
        return run

    def touch(self, hashes: Iterable[bytes]) -> None:
        """These blocks were just used (RAM hits too): the most recent on disk now."""
        now = time.time()
        with self._lock:
            for block_hash in hashes:
                if block_hash in self._entries:
                    self._entries.move_to_end(block_hash)
                    self._touched[block_hash] = now

    # -- reads -------------------------------------------------------------------------

    def load(self, entry: DiskEntry) -> torch.Tensor | None:
        """The block's KV, or None when it is gone or its file is refused (then forgotten)."""
        with self._lock:
            pending = self._pending.get(entry.block_hash)
        if pending is not None:
            self.touch([entry.block_hash])
            with self._lock:
                self.hits += 1
            return pending.kv
        path = block_path(self.directory, entry.block_hash)
        started = time.perf_counter()
        try:
            kv = read_block_file(
                path, entry, fingerprint=self._digest, dtype=self.dtype, shape=self.block_shape
            )
        except CorruptBlockError as exc:
            with self._lock:
                if self._entries.get(entry.block_hash) is not entry:
                    return None  # evicted meanwhile: simply not on disk any more
                self._forget(entry.block_hash)
                self.corrupt += 1
            logger.warning("KV disk tier: refused block file %s (%s); skipped", path.name, exc)
            self._discard_files([entry.block_hash])
            return None
        elapsed = time.perf_counter() - started
        with self._lock:
            self.hits += 1
            self.bytes_read += entry.nbytes
            self.read_seconds += elapsed
        self.touch([entry.block_hash])
        return kv

    # -- writes ------------------------------------------------------------------------

    def offer(
        self,
        block_hash: bytes,
        parent_hash: bytes,
        token_ids: tuple[int, ...],
        fill: Callable[[torch.Tensor], None],
    ) -> bool:
        """Queue a block for writing unless it is stored or queued already; ``fill`` copies
        its KV into the tensor given. Whether the block is on its way to disk or there
        (False: dropped, a full queue counting a drop, or the tier closed)."""
        with self._lock:
            if self._closed:
                return False
            if block_hash in self._pending:
                return True
            if block_hash in self._entries:
                self._entries.move_to_end(block_hash)
                return True
            if self._queue.full():
                self.drops += 1
                return False
            kv = torch.empty(self.block_shape, dtype=self.dtype)
            fill(kv)
            entry = DiskEntry(block_hash=block_hash, parent_hash=parent_hash, token_ids=token_ids)
            item = _Pending(entry=entry, kv=kv, generation=self._generation)
            self._pending[block_hash] = item
            self._queue.put_nowait(item)  # only offers put, under this lock: never full here
        return True

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Whether every queued block was written (or dropped) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=_TOUCH_FLUSH_SECONDS)
            except queue.Empty:
                item = None if self._closed else _IDLE
            if item is None:
                self._flush_touches()
                return
            if item is not _IDLE:
                try:
                    self._store(item)
                    self._failing = False
                except Exception:
                    if not self._failing:
                        logger.exception(
                            "KV disk tier: writing a block failed; it and any failing after "
                            "it are not stored"
                        )
                    self._failing = True
                finally:
                    with self._lock:
                        if self._pending.get(item.entry.block_hash) is item:
                            del self._pending[item.entry.block_hash]
            if time.monotonic() - last_flush >= _TOUCH_FLUSH_SECONDS:
                self._flush_touches()
                last_flush = time.monotonic()

    def _store(self, item: _Pending) -> None:
        entry = item.entry
        data = encode_block(item.kv, entry, fingerprint=self._digest)
        with self._lock:
            if item.generation != self._generation or len(data) > self.budget_bytes:
                return  # cleared meanwhile, or a block larger than the whole budget
            victims = self._make_room(len(data))
            self._used_bytes += len(data)  # reserved: the budget holds while writing
        self._discard_files(victims)
        stored = dataclasses.replace(entry, nbytes=len(data))
        try:
            write_atomically(block_path(self.directory, entry.block_hash), data)
            self._index.add(stored, time.time())
        except BaseException:
            with self._lock:
                self._used_bytes -= len(data)
            raise
        with self._lock:
            if item.generation != self._generation:
                self._used_bytes -= len(data)
                cleared = True
            else:
                self._entries[entry.block_hash] = stored
                self.writes += 1
                cleared = False
        if cleared:
            self._discard_files([entry.block_hash])

    def _make_room(self, nbytes: int) -> list[bytes]:
        """Forget least-recently-used blocks until ``nbytes`` more fit (lock held); the
        victims' files are the caller's to remove, outside the lock."""
        victims: list[bytes] = []
        while self._entries and self._used_bytes + nbytes > self.budget_bytes:
            victim = next(iter(self._entries))
            self._forget(victim)
            victims.append(victim)
        self.evictions += len(victims)
        return victims

    def _forget(self, block_hash: bytes) -> None:
        entry = self._entries.pop(block_hash)
        self._used_bytes -= entry.nbytes
        self._touched.pop(block_hash, None)

    def _discard_files(self, hashes: Sequence[bytes]) -> None:
        if not hashes:
            return
        self._index.remove(hashes)
        for block_hash in hashes:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(block_path(self.directory, block_hash))

    def _flush_touches(self) -> None:
        with self._lock:
            touched, self._touched = self._touched, {}
        self._index.touch(touched)

    # -- clear / close / stats ----------------------------------------------------------

    def clear(self) -> int:
        """Forget and delete every stored block (queued ones are dropped); returns how many."""
        with self._lock:
            self._generation += 1
            removed = len(self._entries)
            self._entries.clear()
            self._pending.clear()
            self._touched.clear()
            self._used_bytes = 0
        self._index.reset(self.fingerprint.to_json())
        remove_block_files(self.directory, keep=())
        return removed

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then let the directory go."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._writer.join(timeout)
        self._flush_touches()
        self._index.close()
        self._dir_lock.release()

    def stats(self) -> KVTierSnapshot:
        with self._lock:
            return KVTierSnapshot(
                tier="disk",
                bytes_used=self._used_bytes,
                bytes_budget=self.budget_bytes,
                blocks=len(self._entries),
                hits=self.hits,
                promotions=self.hits,
                demotions=self.writes,
                evictions=self.evictions,
                write_queue_drops=self.drops,
                corrupt_blocks=self.corrupt,
                bytes_read=self.bytes_read,
                read_seconds=round(self.read_seconds, 6),
                read_bytes_per_second=(
                    round(self.bytes_read / self.read_seconds, 1) if self.read_seconds else 0.0
                ),
            )


_IDLE = _Pending(
    entry=DiskEntry(block_hash=b"", parent_hash=b"", token_ids=()),
    kv=torch.empty(0),
    generation=-1,
)
"""The writer's wake-up with nothing queued (time to record recency)."""


def _close_at_exit(ref: weakref.ref[DiskTier]) -> None:
    tier = ref()
    if tier is not None:
        tier.close(timeout=10.0)
