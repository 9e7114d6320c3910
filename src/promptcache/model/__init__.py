"""The model: Llama-family maths and weights, knowing nothing of requests or caches.

``runtime.py`` (:class:`~promptcache.model.runtime.LlamaRuntime`: forwards over an
explicit KV buffer), built on ``architecture.py`` (what it reads from a config, and
what it supports), ``rope.py`` (the RoPE cos/sin table) and ``layers.py`` (one
layer's attention and MLP maths); ``weights.py`` (fused weights), ``weight_files.py``
(reading Hugging Face model directories), ``loading.py`` (finding, converting and
loading a model), ``thread_tuning.py`` and ``torch_threads.py`` (intra-op thread counts).
"""
