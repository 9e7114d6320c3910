"""The SQLite store's schema: ordered, named migrations recorded in ``_migrations``.

Each migration is a function applied once, in order, inside the opening
transaction; its name is recorded so every later open skips it. Never edit
or reorder a released migration: add a new one at the end.

The file is stamped with :data:`APPLICATION_ID` (``PRAGMA application_id``)
so a SQLite file that belongs to something else is refused instead of being
written into.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from promptcache.errors import StoreError

APPLICATION_ID = 0x70634331  # "pcC1"
SQLITE_HEADER = b"SQLite format 3\x00"

Migration = Callable[[sqlite3.Connection], None]


def m001_entries(conn: sqlite3.Connection) -> None:
    # A rowid table (not WITHOUT ROWID): values are often several KB, which
    # SQLite stores better out of the key b-tree.
    conn.execute(
        """
        CREATE TABLE entries (
            key TEXT PRIMARY KEY,
            value BLOB NOT NULL,
            size INTEGER NOT NULL,
            created_at REAL NOT NULL,
            accessed_at REAL NOT NULL,
            expires_at REAL
        )
        """
    )
    conn.execute("CREATE INDEX entries_by_access ON entries (accessed_at)")
    conn.execute(
        "CREATE INDEX entries_by_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL"
    )


def m002_counters(conn: sqlite3.Connection) -> None:
    # Totals kept by triggers inside each write's own transaction, so they are
    # exact across processes and the byte budget is checked in O(1).
    conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.executemany(
        "INSERT INTO counters (name, value) VALUES (?, 0)",
        [("entries",), ("bytes",), ("hits",), ("misses",), ("evictions",)],
    )
    conn.execute(
        """
        CREATE TRIGGER entries_after_insert AFTER INSERT ON entries BEGIN
            UPDATE counters SET value = value + 1 WHERE name = 'entries';
            UPDATE counters SET value = value + new.size WHERE name = 'bytes';
        END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER entries_after_delete AFTER DELETE ON entries BEGIN
            UPDATE counters SET value = value - 1 WHERE name = 'entries';
            UPDATE counters SET value = value - old.size WHERE name = 'bytes';
        END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER entries_after_resize AFTER UPDATE OF size ON entries BEGIN
            UPDATE counters SET value = value + new.size - old.size WHERE name = 'bytes';
        END
        """
    )


MIGRATIONS: tuple[Migration, ...] = (m001_entries, m002_counters)


def check_file_header(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite before sqlite3 touches it."""
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"Cannot read the response cache file {path}: {exc}") from exc
    if header and header != SQLITE_HEADER:
        raise not_a_store(path, "it is not a SQLite database")


def not_a_store(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path} is not a promptcache response store ({why}). "
        "Fix: point the store URL at a new file (e.g. sqlite:///.promptcache/responses.db), "
        "or move this file away if it is disposable."
    )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to date in one write transaction (safe with concurrent openers)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        raise _database_error(path, exc) from exc
    try:
        _check_ownership(conn, path)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)"
        )
        applied = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
        known = [m.__name__ for m in MIGRATIONS]
        unknown = applied - set(known)
        if unknown:
            raise StoreError(
                f"{path} was written by a newer promptcache (migrations {sorted(unknown)} "
                "are unknown here). Fix: upgrade promptcache, or use another store file."
            )
        for migration in MIGRATIONS:
            if migration.__name__ not in applied:
                migration(conn)
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (migration.__name__, time.time()),
                )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException as exc:
        conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.DatabaseError):
            raise _database_error(path, exc) from exc
        raise


def _check_ownership(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id == APPLICATION_ID:
        return
    if app_id != 0:
        raise not_a_store(path, f"its SQLite application_id is {app_id:#x}")
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if tables - {"_migrations", "entries", "counters"} or (tables and "_migrations" not in tables):
        raise not_a_store(path, f"it already holds other tables: {', '.join(sorted(tables))}")


def _database_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    if "not a database" in str(exc) or "malformed" in str(exc):
        return not_a_store(path, str(exc))
    return StoreError(f"Cannot open the response cache {path}: {exc}")
