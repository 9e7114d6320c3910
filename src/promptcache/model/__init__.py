"""The model: Llama-family maths and weights, knowing nothing of requests or caches.

``runtime.py`` (:class:`~promptcache.model.runtime.LlamaRuntime`: forwards over an
explicit KV buffer), ``weights.py`` (fused weights), ``weight_files.py`` (reading
Hugging Face model directories), ``loading.py`` (finding, converting and loading a
model), ``thread_tuning.py`` and ``torch_threads.py`` (intra-op thread counts).
"""
