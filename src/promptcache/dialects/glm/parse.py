"""A GLM ``POST /api/paas/v4/chat/completions`` body -> canonical :class:`ChatRequest`.

GLM's body is OpenAI's Chat Completions body plus Zhipu's fields (``do_sample``,
``thinking``, ``request_id``, ``user_id``, ``tool_stream``), every optional field
nullable; the OpenAI parser reads all of it (:mod:`promptcache.dialects.openai.zhipu`
gives Zhipu's fields their meaning), so this module only adds what differs on
GLM's own path: a stream always ends with the usage, as GLM's does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from promptcache.dialects.openai.parse import parse_request as parse_openai_request
from promptcache.request import ChatRequest


def parse_request(body: Any, *, tenant: str = "", namespace: str = "") -> ChatRequest:
    """Validate a GLM chat body (OpenAI's rules and wording, Zhipu's fields)."""
    request = parse_openai_request(body, tenant=tenant, namespace=namespace)
    if request.transport.stream and not request.transport.include_usage:
        # GLM streams always report usage (no stream_options needed).
        request = replace(request, transport=replace(request.transport, include_usage=True))
    return request
