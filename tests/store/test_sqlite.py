from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from promptcache.errors import StoreError
from promptcache.store.sqlite import SqliteStore, SqliteStoreConfig


def _open(path: Path, **kwargs: object) -> SqliteStore:
    return SqliteStore(SqliteStoreConfig(path=path, **kwargs))  # type: ignore[arg-type]


def test_wal_mode_and_recorded_migrations(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    _open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == ["m001_entries", "m002_counters"]
    conn.close()
    _open(path).close()  # reopening applies nothing twice
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == 2
    conn.close()


def test_entries_persist_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with _open(path) as store:
        store.put("k", b"value")
        store.get("k")
    with _open(path) as store:
        entry = store.get("k")
        assert entry is not None and entry.value == b"value"
        assert store.stats().hits == 2  # counters are flushed on close and shared


def test_lru_eviction_by_bytes_spares_recently_read_entries(tmp_path: Path) -> None:
    store = _open(tmp_path / "c.db", max_bytes=100, touch_interval=0)
    for key in ("k1", "k2", "k3", "k4"):
        store.put(key, b"x" * 18)  # 20 bytes each with the key
    assert store.get("k1") is not None
    store.flush()  # record k1's access so it is no longer the least recent
    store.put("k5", b"x" * 18)
    store.put("k6", b"x" * 18)  # 120 bytes > 100: the least recently used goes
    assert store.get("k2") is None
    assert store.get("k1") is not None
    stats = store.stats()
    assert stats.bytes <= 100 and stats.entries == 5 and stats.evictions == 1
    store.close()


def test_max_entries(tmp_path: Path) -> None:
    with _open(tmp_path / "c.db", max_entries=3, max_bytes=None) as store:
        for i in range(10):
            store.put(f"k{i}", b"v")
        stats = store.stats()
        assert stats.entries == 3 and stats.evictions == 7
        assert store.get("k9") is not None


def test_expired_entries_are_purged_before_evicting_live_ones(tmp_path: Path) -> None:
    with _open(tmp_path / "c.db", max_bytes=60) as store:
        store.put("old", b"x" * 17, ttl=0.001)
        time.sleep(0.01)  # let it expire
        store.put("k1", b"x" * 18)
        store.put("k2", b"x" * 18)
        store.put("k3", b"x" * 18)  # over budget only while "old" is counted
        assert all(store.get(k) is not None for k in ("k1", "k2", "k3"))
        assert store.stats().evictions == 0


def test_garbage_file_is_a_store_error_naming_file_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError, match=r"notes\.db is not a promptcache response store.*Fix:"):
        _open(path)
    assert path.read_bytes().startswith(b"these are my notes")  # untouched


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"app\.db.*other tables: users.*Fix:"):
        _open(path)


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    _open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer promptcache"):
        _open(path)


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = _open(tmp_path / "c.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get("k")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"ttl": -1.0}, "ttl"),
        ({"busy_timeout": 0}, "busy_timeout"),
        ({"touch_interval": -1.0}, "touch_interval"),
    ],
)
def test_config_validation(tmp_path: Path, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SqliteStoreConfig(path=tmp_path / "c.db", **kwargs)  # type: ignore[arg-type]
