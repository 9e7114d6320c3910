"""Opening a disk tier's directory: the index read once, memory, index and files aligned.

No KV is read. Blocks written under another model fingerprint are discarded
with one log line; an unreadable index is replaced by an empty one (one log
line); temporary files (a writer killed mid-write), files with no index row (killed
after the rename) and rows with no file are swept.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from promptcache.prefix.disk.directory import remove_block_files
from promptcache.prefix.disk.fingerprint import ModelFingerprint
from promptcache.prefix.disk.index import DiskEntry, DiskIndex, remove_index

logger = logging.getLogger("promptcache.prefix.disk")


def open_index(directory: Path, fingerprint: ModelFingerprint) -> tuple[DiskIndex, list[DiskEntry]]:
    """The index, and the blocks it holds that can be served, least recently used first."""
    index: DiskIndex | None = None
    try:
        index = DiskIndex(directory)
        return index, _reconcile(index, directory, fingerprint)
    except sqlite3.DatabaseError as exc:
        if index is not None:
            index.close()
        logger.warning(
            "KV disk tier index at %s is unreadable (%s): starting the tier afresh",
            directory,
            exc,
        )
    remove_index(directory)
    index = DiskIndex(directory)
    return index, _reconcile(index, directory, fingerprint)


def _reconcile(index: DiskIndex, directory: Path, fingerprint: ModelFingerprint) -> list[DiskEntry]:
    stored = index.fingerprint()
    if stored != fingerprint.to_json():
        if stored is not None:
            changed = fingerprint.differences(ModelFingerprint.from_json(stored))
            logger.warning(
                "KV disk tier at %s was written for another model configuration "
                "(%s changed): discarding it",
                directory,
                ", ".join(changed) or "format",
            )
        index.reset(fingerprint.to_json())
        remove_block_files(directory, keep=())
        return []
    entries = index.entries()
    present = remove_block_files(directory, keep={e.block_hash for e in entries})
    index.remove([e.block_hash for e in entries if e.block_hash not in present])
    return [entry for entry in entries if entry.block_hash in present]
