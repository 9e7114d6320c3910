"""Zhipu GLM's additions to the Chat Completions body, accepted on both chat paths.

Zhipu's SDK (``zai-sdk``) speaks an OpenAI-shaped body with a few fields of its
own, and sends them to whatever ``base_url`` it is given -- GLM's
``/api/paas/v4/chat/completions`` or an OpenAI-style ``/v1/chat/completions``.
It always sends ``"thinking": null`` and ``"response_format": null``, and for
``temperature <= 0`` sends ``temperature: 0.01, do_sample: false`` instead.
So both the OpenAI dialect and the GLM dialect read these, with GLM's meaning:

``do_sample``
    ``false``: greedy decoding (``temperature`` and ``top_p`` are ignored, as at
    GLM); ``true``: sample with the given ``temperature`` / ``top_p`` (1.0,
    the model's own distribution, when neither is given). Absent: as OpenAI.
``thinking``
    ``{"type": "enabled" | "disabled", "clear_thinking": bool}``: whether a
    hybrid-reasoning GLM model may think before answering -- the canonical
    :class:`~promptcache.request.Thinking`, sent on to an upstream that takes it
    (GLM's own shape to GLM; the local model cannot think, so ``enabled`` is a 400
    there). ``clear_thinking: false`` (GLM's preserved thinking: earlier turns'
    ``reasoning_content`` kept in the context) is a 400: promptcache drops earlier
    turns' reasoning from the prompt, which is what ``true`` asks for.
``request_id``, ``user_id``
    Transport fields: the request's id (logged with a server error, echoed in
    GLM's response body) and the end user (``user``); never in a cache key.
``tool_stream``
    Stream tool-call arguments as they are generated (with ``stream``); the
    local engine emits each call whole, in one delta, which a tool-streaming
    client accumulates the same way.

Every optional field may be ``null``, meaning absent (:func:`without_nulls`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from promptcache.dialects._fields import Fields
from promptcache.request import ChatRequest, Thinking

ZHIPU_PARAMS = frozenset({"do_sample", "thinking", "request_id", "user_id", "tool_stream"})
"""Zhipu's top-level fields, accepted alongside OpenAI's."""


def without_nulls(body: Any) -> Any:
    """The body without its top-level ``null`` fields: null means absent, for every
    optional field (required ones are then reported missing)."""
    if isinstance(body, dict) and None in body.values():
        return {key: value for key, value in body.items() if value is not None}
    return body


def apply_zhipu_fields(top: Fields, request: ChatRequest) -> ChatRequest:
    """``request`` with Zhipu's fields of ``top`` applied (validated here, in the
    dialect's wording); the request itself when none is given."""
    if not any(key in top.data for key in ZHIPU_PARAMS):
        return request
    do_sample = top.boolean("do_sample")
    thinking = _parse_thinking(top)
    top.boolean("tool_stream")
    request_id = _bounded_string(top, "request_id", 6, 64)
    user_id = _bounded_string(top, "user_id", 6, 128)
    sampling = request.sampling
    if thinking is not None:
        sampling = replace(sampling, thinking=thinking)
    if do_sample is False:
        sampling = replace(sampling, temperature=0.0, top_p=None)
    elif do_sample and sampling.temperature is None and sampling.top_p is None:
        sampling = replace(sampling, temperature=1.0)
    transport = replace(
        request.transport,
        request_id=request_id or request.transport.request_id,
        user=request.transport.user or user_id,
    )
    return replace(request, sampling=sampling, transport=transport)


def _parse_thinking(top: Fields) -> Thinking | None:
    thinking = top.obj("thinking")
    if thinking is None:
        return None
    thinking.reject_unknown({"type", "clear_thinking"})
    mode = thinking.choice("type", ("enabled", "disabled"), required=True)
    if thinking.boolean("clear_thinking") is False:
        raise top.style.invalid(
            thinking.at("clear_thinking"),
            "'thinking.clear_thinking' false (preserved thinking) cannot apply here: "
            "earlier turns' reasoning_content is dropped from the prompt. Leave it out "
            "or send true.",
        )
    return Thinking(mode="enabled" if mode == "enabled" else "disabled")


def _bounded_string(top: Fields, key: str, shortest: int, longest: int) -> str | None:
    value = top.string(key)
    if value is not None and not shortest <= len(value) <= longest:
        raise top.style.invalid(
            top.at(key), f"'{key}' must be {shortest} to {longest} characters long."
        )
    return value
