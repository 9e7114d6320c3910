"""OpenAI Chat Completions request body -> canonical :class:`ChatRequest`.

Validation follows the real API's schema and wording (``Missing required
parameter: 'model'.``, ``param`` like ``messages.[0].role``). Folding rules:
system and developer messages are hoisted, in order, into
``ChatRequest.system``; assistant ``tool_calls`` become ``ToolUseBlock``s;
consecutive ``role: "tool"`` messages become one user message of
``ToolResultBlock``s. ``cache_control`` is accepted on content parts, and as
extensions on a tool, on a whole message (marking its last block) and at the
top level (automatic caching: the last cacheable block, as at Anthropic).

This module reads the top level (parameters, sampling, stop, transport);
``messages`` are read in :mod:`.messages`, ``tools`` / ``tool_choice`` /
``response_format`` in :mod:`.tools`, and :mod:`.style` words the errors.
"""

from __future__ import annotations

from typing import Any, Literal

from promptcache.dialects._fields import Fields, check_json, check_text, parse_cache_control
from promptcache.dialects.openai.messages import parse_messages
from promptcache.dialects.openai.style import STYLE
from promptcache.dialects.openai.tools import (
    parse_response_format,
    parse_tool_choice,
    parse_tools,
)
from promptcache.dialects.openai.zhipu import ZHIPU_PARAMS, apply_zhipu_fields, without_nulls
from promptcache.request import ChatRequest, SamplingParams, Transport

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# Accepted for compatibility, validated for type, with nothing to do here: storage and
# service tiers are the provider's bookkeeping, the safety id a user id; text is the
# only modality anything here produces.
_IGNORED_PARAMS = frozenset(
    {
        "store",
        "service_tier",
        "safety_identifier",
        "modalities",
    }
)
_PARAMS = _IGNORED_PARAMS | {
    "reasoning_effort",
    "verbosity",
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    # vLLM's extra sampling parameters (OpenAI itself has none of them).
    "top_k",
    "min_p",
    "repetition_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "functions",
    "function_call",
    "audio",
    "prediction",
    "web_search_options",
    "cache_control",  # extension: automatic caching, as in the Anthropic dialect
}
_PARAMS |= ZHIPU_PARAMS  # Zhipu GLM's fields, read by .zhipu


def parse_request(
    body: Any, *, tenant: str = "", namespace: str = "", request_id: str | None = None
) -> ChatRequest:
    """Validate an OpenAI ``POST /v1/chat/completions`` body and build the canonical request."""
    top = Fields(STYLE, without_nulls(body))  # null = absent (Zhipu's SDK sends nulls)
    top.reject_unknown(_PARAMS)
    _reject_unsupported(top)
    model = top.required_string("model")
    raw_messages = top.array("messages", required=True) or []
    if not raw_messages:
        raise STYLE.invalid(
            ("messages",),
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
        )
    system, messages = parse_messages(raw_messages)
    tools = parse_tools(top)
    # Building the request validates its breakpoints (a 400 on too many or misordered).
    request = ChatRequest(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        sampling=_parse_sampling(top),
        response_format=parse_response_format(top),
        tool_choice=parse_tool_choice(top, tools),
        tenant=tenant,
        namespace=namespace,
        transport=_parse_transport(top, request_id),
        cache_control=parse_cache_control(top),
    )
    return apply_zhipu_fields(top, request)  # do_sample, thinking, request_id, user_id...


def _reject_unsupported(top: Fields) -> None:
    top.boolean("store")
    if top.boolean("logprobs"):
        raise STYLE.invalid(("logprobs",), "logprobs are not supported by this server.")
    if top.integer("top_logprobs", minimum=0, maximum=20):
        raise STYLE.invalid(
            ("top_logprobs",), "top_logprobs are not supported by this server (no logprobs)."
        )
    for legacy in ("functions", "function_call"):
        if top.has(legacy):
            raise STYLE.invalid(
                (legacy,), f"'{legacy}' is deprecated and not supported here: use 'tools'."
            )
    for unsupported in ("audio", "prediction", "web_search_options"):
        if top.has(unsupported):
            raise STYLE.invalid((unsupported,), f"'{unsupported}' is not supported by this server.")
    modalities = top.array("modalities") or []
    for i, modality in enumerate(modalities):
        if modality != "text":
            raise STYLE.not_one_of(("modalities", i), modality, ("text",))


def _parse_sampling(top: Fields) -> SamplingParams:
    max_tokens = top.integer("max_tokens", minimum=1)
    max_completion = top.integer("max_completion_tokens", minimum=1)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise STYLE.invalid(
            ("max_tokens",),
            "max_tokens and max_completion_tokens cannot both be set to different values; "
            "use max_completion_tokens.",
        )
    return SamplingParams(
        temperature=top.number("temperature", minimum=0, maximum=2),
        top_p=top.number("top_p", minimum=0, maximum=1),
        max_tokens=max_completion if max_completion is not None else max_tokens,
        stop=_parse_stop(top),
        seed=top.integer("seed"),
        n=top.integer("n", minimum=1, maximum=128) or 1,
        frequency_penalty=top.number("frequency_penalty", minimum=-2, maximum=2),
        presence_penalty=top.number("presence_penalty", minimum=-2, maximum=2),
        logit_bias=_parse_logit_bias(top),
        top_k=top.integer("top_k", minimum=-1),
        min_p=top.number("min_p", minimum=0, maximum=1),
        repetition_penalty=_parse_repetition_penalty(top),
        reasoning_effort=top.choice("reasoning_effort", REASONING_EFFORTS),
        verbosity=top.choice("verbosity", ("low", "medium", "high")),
    )


def _parse_logit_bias(top: Fields) -> tuple[tuple[int, float], ...]:
    """``{"<token id>": bias}``: ids as decimal strings, biases -100..100 (sorted by id)."""
    bias = top.obj("logit_bias")
    if bias is None:
        return ()
    pairs: list[tuple[int, float]] = []
    for key in bias.data:
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            raise STYLE.invalid(
                ("logit_bias",),
                f"Invalid key in 'logit_bias': {key!r}. Keys must be token ids "
                "(non-negative integers, as strings).",
            )
        value = bias.number(key, minimum=-100, maximum=100)
        if value is not None:
            pairs.append((int(key), value))
    return tuple(sorted(pairs))


def _parse_repetition_penalty(top: Fields) -> float | None:
    value = top.number("repetition_penalty", minimum=0)
    if value is not None and value <= 0:
        raise STYLE.invalid(
            ("repetition_penalty",), f"repetition_penalty must be greater than 0, got {value}."
        )
    return value


def _parse_stop(top: Fields) -> tuple[str, ...]:
    stop = top.data.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (check_text(STYLE, ("stop",), stop),)
    if not isinstance(stop, list):
        raise STYLE.wrong_type(("stop",), "array", stop)
    if len(stop) > 4:
        raise STYLE.invalid(
            ("stop",),
            f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
            f"but got an array with length {len(stop)} instead.",
        )
    for i, item in enumerate(stop):
        if not isinstance(item, str):
            raise STYLE.wrong_type(("stop", i), "string", item)
        check_text(STYLE, ("stop", i), item)
    return tuple(stop)


def _parse_transport(top: Fields, request_id: str | None) -> Transport:
    stream = bool(top.boolean("stream"))
    options = top.obj("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise STYLE.invalid(
                ("stream_options",),
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
        options.reject_unknown({"include_usage", "include_obfuscation"})
        include_usage = bool(options.boolean("include_usage"))
        options.boolean("include_obfuscation")
    metadata = top.obj("metadata")
    if metadata is not None:
        check_json(STYLE, ("metadata",), metadata.data)
        for key in metadata.data:
            metadata.string(key)
    return Transport(
        stream=stream,
        include_usage=include_usage,
        request_id=request_id,
        user=top.string("user"),
        metadata=None if metadata is None else dict(metadata.data),
        prompt_cache_key=top.string("prompt_cache_key"),
        prompt_cache_retention=_parse_retention(top),
    )


def _parse_retention(top: Fields) -> Literal["in_memory", "24h"] | None:
    retention = top.choice("prompt_cache_retention", ("in_memory", "24h"))
    if retention is None:
        return None
    return "24h" if retention == "24h" else "in_memory"
