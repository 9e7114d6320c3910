"""The AWS event-stream framing (``application/vnd.amazon.eventstream``).

One message is::

    total length (4) | headers length (4) | prelude CRC32 (4)
    headers | payload | message CRC32 (4)

all integers big-endian, the prelude CRC over the first 8 bytes and the
message CRC over everything before it. A header is its name's length (1 byte),
the name, its value type (7: string), the value's length (2 bytes) and the
value. Bedrock's streams carry ``:event-type``, ``:content-type`` and
``:message-type`` (``event``), or ``:exception-type`` with
``:message-type: exception`` for an error after the 200 went out.
"""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import Mapping
from typing import Any

MEDIA_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def _header(name: str, value: str) -> bytes:
    raw_name = name.encode()
    raw_value = value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", _STRING, len(raw_value))
        + raw_value
    )


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with string ``headers`` and ``payload``."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


def _json(payload: Any) -> bytes:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate quoted back in a message
        return json.dumps(payload, separators=(",", ":")).encode()


def event(event_type: str, payload: Any) -> bytes:
    """An ``event`` message whose payload is ``payload`` as JSON."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, _json(payload))


def exception(exception_type: str, message: str) -> bytes:
    """An in-stream error: ``exception_type`` is the stream member (``validationException``)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, _json({"message": message}))
