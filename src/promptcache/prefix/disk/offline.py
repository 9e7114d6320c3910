"""The disk tier seen from outside a server: its figures, and emptying it (the CLI's)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from promptcache.prefix.disk.directory import DirectoryLock, remove_block_files
from promptcache.prefix.disk.fingerprint import ModelFingerprint
from promptcache.prefix.disk.index import INDEX_NAME, DiskIndex


@dataclass(frozen=True, kw_only=True)
class DirectoryFigures:
    blocks: int
    bytes: int
    fingerprint: ModelFingerprint | None
    """What the blocks were written for (None: nothing recorded yet)."""


def describe_directory(directory: Path) -> DirectoryFigures:
    """Blocks and bytes indexed under ``directory`` (read only; a server may be running)."""
    path = directory / INDEX_NAME
    if not path.is_file():
        raise ValueError(f"no KV disk tier at {directory} (no {INDEX_NAME})")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        blocks, nbytes = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM blocks"
        ).fetchone()
        row = db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
    return DirectoryFigures(
        blocks=int(blocks),
        bytes=int(nbytes),
        fingerprint=ModelFingerprint.from_json(row[0]) if row else None,
    )


def clear_directory(directory: Path) -> DirectoryFigures:
    """Delete every block under ``directory`` (refused while a server uses it); what went."""
    if not (directory / INDEX_NAME).is_file():
        return DirectoryFigures(blocks=0, bytes=0, fingerprint=None)
    lock = DirectoryLock(directory)  # ValueError naming the running server's pid
    try:
        before = describe_directory(directory)
        index = DiskIndex(directory)
        try:
            stored = index.fingerprint()
            index.reset(stored or "")
        finally:
            index.close()
        remove_block_files(directory, keep=())
        return before
    finally:
        lock.release()
