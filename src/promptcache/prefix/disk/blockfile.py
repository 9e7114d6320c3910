"""One cached KV block as a safetensors file: the tensor, and metadata that proves what it is.

The file holds one tensor, ``kv`` (``[num_layers, 2, num_kv_heads, block_size,
head_dim]`` in the pool's dtype), written by the ``safetensors`` package, and
metadata: the format, the model fingerprint's digest, the block's chain hash,
its parent's hash (the tenant's root hash for block 0), its token ids and an
xxh3-128 checksum of the tensor bytes.

A file is written to a temporary name, fsynced, then renamed into place, so a
process killed mid-write leaves a stray temporary file, never a torn block. A
block read back is refused (:class:`CorruptBlockError`) unless every metadata
field matches what the index expects and the checksum matches the bytes: a
truncated, bit-flipped or foreign file is never served.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import xxhash
from safetensors.torch import save

FORMAT = "promptcache-kv-block-v1"
TEMP_SUFFIX = ".tmp"
_DTYPE_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


class CorruptBlockError(Exception):
    """A block file that is not what the index says it is (torn, truncated, altered)."""


@dataclass(frozen=True, kw_only=True)
class DiskEntry:
    """One stored block: its chain hash, its parent's (the root hash for block 0), its
    token ids, and its file's size (0 until written)."""

    block_hash: bytes
    parent_hash: bytes
    token_ids: tuple[int, ...]
    nbytes: int = 0


def checksum(data: bytes | bytearray | memoryview) -> str:
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


def tensor_bytes(kv: torch.Tensor) -> memoryview:
    """The raw (native-endian) bytes of a contiguous tensor, without a copy."""
    raw = kv.contiguous().view(torch.uint8).numpy()
    return memoryview(raw.data).cast("B")


def encode_block(kv: torch.Tensor, entry: DiskEntry, *, fingerprint: str) -> bytes:
    """The safetensors bytes of one block file."""
    kv = kv.contiguous()
    if kv.dtype not in _DTYPE_CODES:
        raise ValueError(f"the disk tier cannot store KV of dtype {kv.dtype}")
    metadata = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "hash": entry.block_hash.hex(),
        "parent": entry.parent_hash.hex(),
        "tokens": json.dumps(list(entry.token_ids), separators=(",", ":")),
        "checksum": checksum(tensor_bytes(kv)),
    }
    return save({"kv": kv}, metadata=metadata)


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` at ``path``: written to a temporary name, fsynced, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + TEMP_SUFFIX)
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def read_block_file(
    path: Path,
    entry: DiskEntry,
    *,
    fingerprint: str,
    dtype: torch.dtype,
    shape: tuple[int, ...],
) -> torch.Tensor:
    """The block's KV (``shape``, ``dtype``), or :class:`CorruptBlockError` saying why not.

    Reads the file once into memory and views the tensor in place (no second copy).
    """
    try:
        with open(path, "rb") as file:
            data = bytearray(os.fstat(file.fileno()).st_size)
            got = file.readinto(data)
    except OSError as exc:
        raise CorruptBlockError(f"unreadable: {exc.strerror or exc}") from exc
    if got != len(data) or len(data) < 8:
        raise CorruptBlockError("truncated")
    header_len = int.from_bytes(data[:8], "little")
    if 8 + header_len > len(data):
        raise CorruptBlockError("truncated header")
    try:
        header = json.loads(bytes(data[8 : 8 + header_len]))
    except ValueError as exc:
        raise CorruptBlockError("unreadable header") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    info = header.get("kv") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not isinstance(info, dict):
        raise CorruptBlockError("not a promptcache KV block")
    _check_identity(meta, entry, fingerprint)
    numel = 1
    for size in shape:
        numel *= size
    nbytes = numel * (torch.finfo(dtype).bits // 8)
    if info.get("dtype") != _DTYPE_CODES.get(dtype) or list(info.get("shape", ())) != list(shape):
        raise CorruptBlockError(
            f"holds {info.get('dtype')} {info.get('shape')}, expected {_DTYPE_CODES.get(dtype)} "
            f"{list(shape)}"
        )
    if info.get("data_offsets") != [0, nbytes] or len(data) - 8 - header_len != nbytes:
        raise CorruptBlockError("truncated tensor data")
    body = memoryview(data)[8 + header_len :]
    if checksum(body) != meta.get("checksum"):
        raise CorruptBlockError("checksum mismatch")
    return torch.frombuffer(data, dtype=dtype, offset=8 + header_len, count=numel).view(shape)


def _check_identity(meta: dict[str, object], entry: DiskEntry, fingerprint: str) -> None:
    expected = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "hash": entry.block_hash.hex(),
        "parent": entry.parent_hash.hex(),
    }
    for name, value in expected.items():
        if meta.get(name) != value:
            raise CorruptBlockError(f"metadata {name} does not match the index")
    try:
        tokens = json.loads(str(meta.get("tokens")))
    except ValueError as exc:
        raise CorruptBlockError("unreadable token ids") from exc
    if tokens != list(entry.token_ids):
        raise CorruptBlockError("token ids do not match the index")
