"""The disk tier of the KV prefix cache: blocks under the RAM tier, kept across restarts.

:mod:`~promptcache.prefix.disk.tier` is the tier (lookups, reads, the writer
thread, LRU within a byte budget); :mod:`~promptcache.prefix.disk.blockfile`
the file format (safetensors + metadata + checksum),
:mod:`~promptcache.prefix.disk.index` the SQLite index,
:mod:`~promptcache.prefix.disk.directory` the directory layout and its lock,
:mod:`~promptcache.prefix.disk.fingerprint` what must match for stored KV to be
used, and :mod:`~promptcache.prefix.disk.tiering` how blocks move between RAM
and disk. :func:`clear_directory` and :func:`describe_directory` serve the CLI
(``promptcache clear --kv``, ``promptcache stats --kv-disk-path``).
"""

from __future__ import annotations

from promptcache.prefix.disk.fingerprint import ModelFingerprint, kv_fingerprint
from promptcache.prefix.disk.offline import DirectoryFigures, clear_directory, describe_directory
from promptcache.prefix.disk.tier import DiskTier

__all__ = [
    "DirectoryFigures",
    "DiskTier",
    "ModelFingerprint",
    "clear_directory",
    "describe_directory",
    "kv_fingerprint",
]
