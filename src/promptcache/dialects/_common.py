"""What both dialects share besides validation: canonical sub-forms, ids, JSON and SSE framing.

Field validation lives in :mod:`promptcache.dialects._fields`. Canonical
sub-forms (part of the cache-key contract, so both dialects agree):

* ``ImageBlock.source``: ``{"type": "base64", "media_type", "data"}`` or
  ``{"type": "url", "url"}`` (Anthropic's shape), plus ``"detail"`` when an
  OpenAI client gave one.
* ``ChatRequest.tool_choice``: Anthropic's shape, ``{"type": "auto" | "any" |
  "none" | "tool", "name"?, "disable_parallel_tool_use"?}``.
* ``ChatRequest.response_format``: OpenAI's shape (``json_object`` or
  ``json_schema``); ``{"type": "text"}`` is the default and becomes ``None``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

from promptcache.request import CacheControl

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def render_cache_control(marker: CacheControl | None) -> dict[str, str] | None:
    if marker is None:
        return None
    return {"type": marker.type, "ttl": marker.ttl}


def image_source_from_url(url: str, detail: str | None) -> dict[str, Any]:
    """OpenAI's ``image_url.url`` (an http(s) URL or a base64 data URL) in canonical form."""
    match = _DATA_URL.match(url)
    source: dict[str, Any]
    if match:
        source = {"type": "base64", "media_type": match["media"], "data": match["data"]}
    else:
        source = {"type": "url", "url": url}
    if detail is not None:
        source["detail"] = detail
    return source


def image_source_to_url(source: Mapping[str, Any]) -> str:
    if source.get("type") == "base64":
        return f"data:{source['media_type']};base64,{source['data']}"
    return str(source["url"])


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


_ID_PREFIXES = ("chatcmpl-", "msg_")


def dialect_id(result_id: str, prefix: str) -> str:
    """A result id in one API's format, whichever dialect or engine made it."""
    for known in _ID_PREFIXES:
        if result_id.startswith(known):
            result_id = result_id[len(known) :]
            break
    return f"{prefix}{result_id}"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encodable_dumps(value: Any) -> str:
    """:func:`dumps`, or with ASCII escapes when ``value`` holds a lone surrogate.

    Only an error message quoting input can carry one (such input is refused);
    the escapes keep the JSON valid and writable as UTF-8.
    """
    text = dumps(value)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text


def sse_data(payload: Any) -> bytes:
    """One OpenAI-style SSE frame (``data:`` only)."""
    text = payload if isinstance(payload, str) else dumps(payload)
    return f"data: {text}\n\n".encode()


def sse_event(event: str, payload: Any) -> bytes:
    """One Anthropic-style SSE frame (named ``event:`` plus ``data:``)."""
    return f"event: {event}\ndata: {dumps(payload)}\n\n".encode()


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """Parse an SSE line stream into ``(event, data)`` pairs (event ``""`` when unnamed)."""
    event = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)
