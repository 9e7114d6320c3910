"""The local engine: a local Llama-family model behind the prefix cache.

``engine.py`` (:class:`LocalEngine`, :class:`LocalEngineConfig`), ``generation.py``
(one request's steps: match -> gather -> prefill -> commit -> decode -> release),
``kv_buffers.py`` (request KV buffers), ``executor.py`` (the compute thread, batched decode),
``prompt.py`` (chat template rendering, breakpoint positions), ``tool_calls.py``,
``sampling.py``, ``structured_output.py``.
"""

from promptcache.engine.local.engine import LocalEngine, LocalEngineConfig

__all__ = ["LocalEngine", "LocalEngineConfig"]
