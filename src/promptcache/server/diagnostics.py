"""Anthropic's cache diagnostics: ``diagnostics: {"previous_message_id": ...}``.

For every request that carries the ``diagnostics`` object, a fingerprint of its
prompt (the model, the tools, the system blocks, a digest per message) is kept
under the id of the message it was answered with, per tenant, in a bounded LRU.
A later request naming that id as ``previous_message_id`` gets
``diagnostics.cache_miss_reason`` on its response: where its prompt stopped
being a continuation of the previous one (``model_changed``, ``tools_changed``,
``system_changed``, ``messages_changed``), ``previous_message_not_found`` when the
id is unknown (never seen, another tenant's, or pushed out), or ``null`` when
nothing diverged (and on a first turn, ``previous_message_id: null``).

``cache_control`` markers are left out of the fingerprint: moving a breakpoint
does not change the prompt's text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptcache.keys import canonical_json
from promptcache.request import ChatRequest, Message

DEFAULT_CAPACITY = 10_000
_FINGERPRINT_ATTR = "_diagnostics_fingerprint"
_TAILS: dict[str | None, bytes] = {}
"""The rendered ``,"diagnostics":{...}}`` ending per reason (a handful of constants)."""
_FIRST_ID = re.compile(rb'"id":"([^"\\]+)"')


@dataclass(frozen=True)
class PromptFingerprint:
    model: str
    tools: str
    system: str
    messages: tuple[str, ...]


def _digest(items: Sequence[Any]) -> str:
    unmarked = [
        dataclasses.replace(item, cache_control=None) if hasattr(item, "cache_control") else item
        for item in items
    ]
    return hashlib.sha256(canonical_json(unmarked).encode()).hexdigest()


def _message_digest(message: Message) -> str:
    return _digest([message.role, *message.content])


def fingerprint(request: ChatRequest) -> PromptFingerprint:
    """The prompt's fingerprint, computed once per request object (the server's parse memo
    hands the same object to every request with the same body, so a repeated diagnosed
    request -- a response-cache hit -- does not hash its prompt again)."""
    cached: PromptFingerprint | None = request.__dict__.get(_FINGERPRINT_ATTR)
    if cached is not None:
        return cached
    made = PromptFingerprint(
        model=request.model,
        tools=_digest(request.tools),
        system=_digest(request.system),
        messages=tuple(_message_digest(m) for m in request.messages),
    )
    object.__setattr__(request, _FINGERPRINT_ATTR, made)  # not a field: keys never see it
    return made


def miss_reason(previous: PromptFingerprint, current: PromptFingerprint) -> str | None:
    """The first level (model, tools, system, messages) where ``current`` stops
    continuing ``previous``, or None when it does."""
    if previous.model != current.model:
        return "model_changed"
    if previous.tools != current.tools:
        return "tools_changed"
    if previous.system != current.system:
        return "system_changed"
    n = len(previous.messages)
    if current.messages[:n] != previous.messages:
        return "messages_changed"
    return None


class CacheDiagnostics:
    """The bounded record of recent prompts by message id, and the comparison."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], PromptFingerprint] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def annotate(self, request: ChatRequest, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` (an Anthropic ``message``) with ``diagnostics`` added; records its prompt."""
        message_id = body.get("id")
        body["diagnostics"] = self.diagnose(
            request, message_id if isinstance(message_id, str) else None
        )
        return body

    def annotate_rendered(self, request: ChatRequest, content: bytes) -> bytes:
        """As :meth:`annotate`, on a rendered (compact JSON) ``message`` body: the hit path
        keeps its memoised bytes and appends the one member."""
        found = _FIRST_ID.search(content)
        diagnostics = self.diagnose(request, found.group(1).decode() if found else None)
        reason = diagnostics["cache_miss_reason"]
        key = None if reason is None else reason["type"]
        tail = _TAILS.get(key)
        if tail is None:
            tail = b',"diagnostics":' + json.dumps(diagnostics, separators=(",", ":")).encode()
            _TAILS[key] = tail + b"}"
            tail = _TAILS[key]
        return content[:-1] + tail

    def diagnose(self, request: ChatRequest, message_id: str | None) -> dict[str, Any]:
        """The ``diagnostics`` member for ``request``, recorded under ``message_id``."""
        current = fingerprint(request)
        previous_id = request.transport.previous_message_id
        reason: str | None = None
        with self._lock:
            if previous_id is not None:
                previous = self._seen.get((request.tenant, previous_id))
                reason = (
                    "previous_message_not_found"
                    if previous is None
                    else miss_reason(previous, current)
                )
            if message_id is not None:
                self._seen[(request.tenant, message_id)] = current
                self._seen.move_to_end((request.tenant, message_id))
                while len(self._seen) > self.capacity:
                    self._seen.popitem(last=False)
        return {"cache_miss_reason": None if reason is None else {"type": reason}}
