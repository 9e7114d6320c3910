"""The local engine: a local Llama-family model behind the prefix cache.

``engine.py`` (:class:`LocalEngine`, :class:`LocalEngineConfig`, one request's
steps), ``executor.py`` (the compute thread, batched decode),
``prompt.py`` (chat template rendering, breakpoint positions), ``tool_calls.py``,
``sampling.py``, ``structured_output.py``.
"""

from promptcache.engine.local.engine import LocalEngine, LocalEngineConfig

__all__ = ["LocalEngine", "LocalEngineConfig"]
