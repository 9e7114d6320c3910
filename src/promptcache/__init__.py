"""promptcache: exact response cache and real KV prefix cache for chat-model calls."""

from __future__ import annotations

from promptcache.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PromptCacheError,
    RequestError,
    StoreError,
    UpstreamError,
)
from promptcache.request import (
    Breakpoint,
    CacheControl,
    ChatRequest,
    Choice,
    ImageBlock,
    Message,
    Result,
    SamplingParams,
    TextBlock,
    TextDelta,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    Transport,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Breakpoint",
    "CacheControl",
    "ChatRequest",
    "Choice",
    "ImageBlock",
    "Message",
    "ModelNotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PromptCacheError",
    "RequestError",
    "Result",
    "SamplingParams",
    "StoreError",
    "TextBlock",
    "TextDelta",
    "Tool",
    "ToolResultBlock",
    "ToolUseBlock",
    "Transport",
    "UpstreamError",
    "Usage",
    "__version__",
]
