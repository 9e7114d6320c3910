"""The disk tier's SQLite index: which blocks are stored, their chain links, and recency.

Reading the index is all a warm start does (no KV is read until a match needs
it). A row is added only after its block file is durably in place, so a row
always names a complete file -- unless the file was damaged later, which its
checksum catches on load. ``meta`` holds the model fingerprint the blocks were
written under. One connection, used under a lock from the writer thread and,
for rare removals, from request threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from promptcache.prefix.disk.blockfile import DiskEntry

__all__ = ["INDEX_NAME", "DiskEntry", "DiskIndex", "remove_index"]

INDEX_NAME = "index.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blocks (hash BLOB PRIMARY KEY, parent BLOB NOT NULL, "
    "tokens TEXT NOT NULL, nbytes INTEGER NOT NULL, last_used REAL NOT NULL) WITHOUT ROWID",
)


def remove_index(directory: Path) -> None:
    """Delete an unreadable index (and its WAL files) so a fresh one can be made."""
    for suffix in ("", "-wal", "-shm"):
        (directory / (INDEX_NAME + suffix)).unlink(missing_ok=True)


class DiskIndex:
    def __init__(self, directory: Path) -> None:
        self.path = directory / INDEX_NAME
        self._lock = threading.Lock()
        # isolation_level=None: explicit transactions only, so each call commits itself.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def fingerprint(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        return str(row[0]) if row else None

    def reset(self, fingerprint: str) -> None:
        """Forget every block and record ``fingerprint`` as the one blocks are written under."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM blocks")
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('fingerprint', ?)",
                (fingerprint,),
            )
            self._db.execute("COMMIT")

    def entries(self) -> list[DiskEntry]:
        """Every stored block, least recently used first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT hash, parent, tokens, nbytes FROM blocks ORDER BY last_used"
            ).fetchall()
        return [
            DiskEntry(
                block_hash=bytes(block_hash),
                parent_hash=bytes(parent),
                token_ids=tuple(json.loads(tokens)),
                nbytes=int(nbytes),
            )
            for block_hash, parent, tokens, nbytes in rows
        ]

    def add(self, entry: DiskEntry, last_used: float) -> None:
        tokens = json.dumps(list(entry.token_ids), separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO blocks (hash, parent, tokens, nbytes, last_used) "
                "VALUES (?, ?, ?, ?, ?)",
                (entry.block_hash, entry.parent_hash, tokens, entry.nbytes, last_used),
            )

    def remove(self, hashes: Iterable[bytes]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM blocks WHERE hash = ?", ((h,) for h in hashes))

    def touch(self, last_used: Mapping[bytes, float]) -> None:
        if not last_used:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE blocks SET last_used = ? WHERE hash = ?",
                ((when, block_hash) for block_hash, when in last_used.items()),
            )
            self._db.execute("COMMIT")
