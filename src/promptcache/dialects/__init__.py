"""The wire dialects: OpenAI Chat Completions and Anthropic Messages.

``openai`` and ``anthropic`` expose the same functions for the server:
``parse_request`` (body -> canonical ``ChatRequest``, validated in the API's
own wording), ``render_response``, ``render_stream`` (exact SSE bytes),
``render_error`` and ``render_models``. ``replay`` turns a cached ``Result``
back into stream events; ``openai_wire`` and ``anthropic_wire`` are the
reverse direction used by the upstream engine. Dialects know nothing of
engines, caches or HTTP frameworks.
"""
