"""The names ``--decode-precision`` and ``--prefill-precision`` accept, without torch.

Kept apart from ``precision.py`` (which needs torch) so ``promptcache serve`` can check
its options -- and run as a proxy with no model -- where torch is not installed.
"""

from __future__ import annotations

__all__ = ["DECODE_PRECISIONS", "PROMPT_PRECISIONS"]

DECODE_PRECISIONS = ("auto", "int4", "float16", "float32")
PROMPT_PRECISIONS = ("auto", "int4", "float32", "bfloat16")
