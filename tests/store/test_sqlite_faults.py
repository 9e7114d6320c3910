"""Several processes, SIGKILL mid-batch: the SQLite store stays whole and loses nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from promptcache.store.sqlite import SqliteStore, SqliteStoreConfig

_WORKER = textwrap.dedent(
    """
    import sys
    from promptcache.store.sqlite import SqliteStore, SqliteStoreConfig

    path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = SqliteStore(SqliteStoreConfig(path=path, max_bytes=None))
    for i in range(count):
        store.put(f"w{worker}:{i}", f"value {worker} {i}".encode() * 20)
        # read what every worker wrote so far (mixed reads and writes)
        store.get(f"w{(worker + 1) % 4}:{i // 2}")
        if store.get(f"w{worker}:{i}") is None:
            raise SystemExit(f"worker {worker} lost its own entry {i}")
    store.close()
    """
)

_KILLED_WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from promptcache.store.sqlite import SqliteStore, SqliteStoreConfig

    store = SqliteStore(SqliteStoreConfig(path=sys.argv[1], max_bytes=None))
    i = 0
    while True:  # runs until SIGKILL
        payload = (f"entry {i} ".encode() * 5000)[: 20000 + i % 5000]
        store.put(f"k{i}", hashlib.sha256(payload).digest() + payload)
        if i == 20:
            print("ready", flush=True)
        i += 1
    """
)


def test_four_processes_reading_and_writing_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteStore(SqliteStoreConfig(path=path)).close()  # create the schema once
    count = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), str(w), str(count)],
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with SqliteStore(SqliteStoreConfig(path=path)) as store:
        for w in range(4):
            for i in range(count):
                entry = store.get(f"w{w}:{i}")
                assert entry is not None and entry.value == f"value {w} {i}".encode() * 20
        assert store.stats().entries == 4 * count
        assert store.integrity_check() == "ok"


def test_writer_killed_mid_batch_leaves_a_whole_database(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    with SqliteStore(SqliteStoreConfig(path=path)) as store:
        assert store.integrity_check() == "ok"
        conn = sqlite3.connect(path)
        keys = [row[0] for row in conn.execute("SELECT key FROM entries")]
        conn.close()
        assert len(keys) >= 21
        for key in keys:
            entry = store.get(key)
            assert entry is not None
            digest, payload = entry.value[:32], entry.value[32:]
            assert hashlib.sha256(payload).digest() == digest, f"partial entry {key}"
        stats = store.stats()
        assert stats.entries == len(keys)
        values = [entry.value for k in keys if (entry := store.get(k)) is not None]
        assert stats.bytes == sum(len(k) for k in keys) + sum(len(v) for v in values)
