"""Block hashes: the chain of SHA-256 digests that names every cached KV block.

Block *i*'s hash covers the hash of block *i-1*, the block's token ids and any
extra keys, so equal hashes mean equal prefixes up to and including that
block. Block 0's parent is :func:`root_hash` over the model identity and the
tenant salt: the salt enters only there, yet every later hash depends on it,
so the same prompt under another tenant never hits.

The KV disk tier (``prefix/disk/``) keeps hashes across restarts, so the
encoding is fixed and unambiguous (changing it needs a new ``_DOMAIN``): every
variable-length field is length-prefixed, token ids are little-endian 64-bit
integers.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections.abc import Sequence
from typing import NewType

BlockHash = NewType("BlockHash", bytes)
"""A 32-byte SHA-256 digest naming one block and, through the chain, its whole prefix."""

_DOMAIN = b"promptcache-kv-block-v1"


def _length_prefixed(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def _encode_tokens(token_ids: Sequence[int]) -> bytes:
    packed = array("q", token_ids)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def root_hash(model_id: str, salt: str) -> BlockHash:
    """The parent of block 0: binds every chain to one model and one tenant."""
    digest = hashlib.sha256(_DOMAIN)
    digest.update(_length_prefixed(model_id.encode("utf-8")))
    digest.update(_length_prefixed(salt.encode("utf-8")))
    return BlockHash(digest.digest())


def hash_block_tokens(
    parent: BlockHash, token_ids: Sequence[int], extra_keys: tuple[object, ...] = ()
) -> BlockHash:
    """Hash one block given its parent's hash.

    ``extra_keys`` distinguish blocks whose token ids are equal but whose KV is
    not (e.g. an image placeholder token standing for different images); they
    are encoded by ``repr``, so pass plain values (str, int, bytes, tuples).
    """
    digest = hashlib.sha256(parent)
    digest.update(_length_prefixed(_encode_tokens(token_ids)))
    if extra_keys:
        digest.update(_length_prefixed(repr(extra_keys).encode("utf-8")))
    return BlockHash(digest.digest())


def hash_prompt_blocks(
    token_ids: Sequence[int], *, block_size: int, root: BlockHash
) -> list[BlockHash]:
    """The hash of every *full* block of ``token_ids``; a trailing partial block is skipped."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    hashes: list[BlockHash] = []
    parent = root
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block_tokens(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes
