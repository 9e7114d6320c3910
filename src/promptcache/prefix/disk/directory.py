"""The disk tier's directory: where each block file lives, sweeping leftovers, one owner.

``<directory>/index.sqlite3`` is the index; ``<directory>/blocks/ab/<hash>.safetensors``
the block files (the first byte of the hash names a subdirectory, so no directory
grows to hundreds of thousands of entries). ``<directory>/lock`` is held (flock)
by the one process using the tier: two servers writing one index would each
evict the other's files from under it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path
from typing import IO

from promptcache.prefix.disk.blockfile import TEMP_SUFFIX

BLOCK_SUFFIX = ".safetensors"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, one process is trusted
    fcntl = None  # type: ignore[assignment]


def block_path(directory: Path, block_hash: bytes) -> Path:
    name = block_hash.hex()
    return directory / "blocks" / name[:2] / (name + BLOCK_SUFFIX)


def remove_block_files(directory: Path, *, keep: Collection[bytes]) -> set[bytes]:
    """Delete every block file not in ``keep`` and every temporary file (a killed writer's
    torn write); returns the hashes of the kept files that exist."""
    present: set[bytes] = set()
    blocks = directory / "blocks"
    if not blocks.is_dir():
        return present
    for sub in blocks.iterdir():
        if not sub.is_dir():
            continue
        for path in sub.iterdir():
            block_hash = _hash_of(path)
            if block_hash is not None and block_hash in keep:
                present.add(block_hash)
            elif path.name.endswith((BLOCK_SUFFIX, TEMP_SUFFIX)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(OSError):
            sub.rmdir()  # only when empty
    return present


def _hash_of(path: Path) -> bytes | None:
    if not path.name.endswith(BLOCK_SUFFIX):
        return None
    try:
        return bytes.fromhex(path.name.removesuffix(BLOCK_SUFFIX))
    except ValueError:
        return None


class DirectoryLock:
    """An exclusive advisory lock on ``<directory>/lock``, held until :meth:`release`."""

    def __init__(self, directory: Path) -> None:
        self._file: IO[str] | None = open(directory / "lock", "a+", encoding="utf-8")  # noqa: SIM115
        if fcntl is None:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            owner = self._file.read().strip() or "unknown"
            self._file.close()
            self._file = None
            raise ValueError(
                f"the KV disk tier at {directory} is in use by another promptcache process "
                f"(pid {owner}); give each server its own --kv-disk-path"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
