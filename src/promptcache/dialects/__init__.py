"""The wire dialects: OpenAI Chat Completions and Anthropic Messages.

One subpackage per dialect (``openai/``, ``anthropic/``), each with
``parse.py`` (body -> canonical ``ChatRequest``, validated in the API's own
wording), ``render.py`` (responses, exact SSE bytes, error bodies, model
lists) and ``wire.py`` (the reverse direction, used by the upstream engine).
Shared by both: ``_fields`` (validation), ``_common`` (canonical sub-forms,
ids, SSE framing), ``base`` (the HTTP status of each error) and ``replay``
(a cached ``Result`` back into stream events). Dialects know nothing of
engines, caches or HTTP frameworks.
"""
