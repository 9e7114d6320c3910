"""The routing key of a request: which prefix a replica's KV cache would hold for it.

Replicas (vLLM, SGLang, llama.cpp, promptcache) reuse a prompt's KV only when
its leading tokens equal ones they have computed, so requests that share
their leading blocks should reach the same replica. The key is a hash chain
over the request's *first prefix blocks*, as the local engine's block hashing
(:mod:`promptcache.prefix.hashing`) names KV blocks:

* the root is :func:`~promptcache.prefix.hashing.root_hash` of the model and
  the **tenant**, so two tenants' requests never share affinity (nor KV);
* the material is the canonical JSON (:func:`promptcache.keys.canonical_json`)
  of ``[tools, system, first message]`` -- the order the prompt is rendered in
  -- with every ``cache_control`` marker left out (a marker changes no token,
  and automatic caching moves it as a conversation grows);
* it is cut in blocks of ``block_bytes``; block *i*'s hash covers block
  *i-1*'s hash and its bytes. The key is the hash of the last *full* block
  within the first ``blocks`` (the whole material when it is shorter than one
  block), so questions after a long shared system prompt or document share a
  key, and what varies past the routing depth does not scatter them.

A request's ``prompt_cache_key`` (OpenAI's routing hint), when given, is the
key instead -- still under the model and tenant root.

The gateway has no tokenizer for a remote model, hence bytes: 1 KiB is about
256 tokens of English, so the default depth (4 blocks) is about the 1024-token
prefix below which providers (and promptcache's ``min_cache_tokens``) do not
cache at all.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import replace
from typing import Any

from promptcache.keys import canonical_json
from promptcache.prefix.hashing import root_hash
from promptcache.request import ChatRequest, ContentBlock, Message, ToolResultBlock

DEFAULT_BLOCK_BYTES = 1024
DEFAULT_BLOCKS = 4
_PROMPT_CACHE_KEY = b"prompt_cache_key"


def _chain(parent: bytes, data: bytes) -> bytes:
    digest = hashlib.sha256(parent)
    digest.update(struct.pack("<Q", len(data)))
    digest.update(data)
    return digest.digest()


def _unmarked_block(block: ContentBlock) -> ContentBlock:
    if isinstance(block, ToolResultBlock):
        inner = tuple(replace(part, cache_control=None) for part in block.content)
        return replace(block, content=inner, cache_control=None)
    return replace(block, cache_control=None)


def prefix_material(request: ChatRequest) -> bytes:
    """The canonical bytes the key is cut from: tools, system, first message, unmarked."""
    first: Message | None = None
    if request.messages:
        message = request.messages[0]
        first = replace(message, content=tuple(_unmarked_block(b) for b in message.content))
    material: list[Any] = [
        [replace(tool, cache_control=None) for tool in request.tools],
        [replace(block, cache_control=None) for block in request.system],
        first,
    ]
    return canonical_json(material).encode("utf-8")


def affinity_key(
    request: ChatRequest, *, blocks: int = DEFAULT_BLOCKS, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> bytes:
    """The 32-byte routing key of ``request`` (see the module docstring)."""
    if blocks < 1 or block_bytes < 1:
        raise ValueError(f"blocks and block_bytes must be >= 1, got {blocks}, {block_bytes}")
    root: bytes = root_hash(request.model, request.tenant)
    if request.transport.prompt_cache_key is not None:
        return _chain(_chain(root, _PROMPT_CACHE_KEY), request.transport.prompt_cache_key.encode())
    material = prefix_material(request)
    full = min(len(material) // block_bytes, blocks)
    if full == 0:
        return _chain(root, material)
    parent = root
    for start in range(0, full * block_bytes, block_bytes):
        parent = _chain(parent, material[start : start + block_bytes])
    return parent


__all__ = ["DEFAULT_BLOCKS", "DEFAULT_BLOCK_BYTES", "affinity_key", "prefix_material"]
