from setuptools import find_packages, setup

# torch is pinned because an unpinned requirement pulls several GB of CUDA wheels on CPU machines.
# GPU users install their own CUDA build of torch first; pip then keeps it (any 2.x satisfies >=).
TORCH = "torch==2.13.0"

extras = {
    "train": ["trl>=1.16", "deepspeed>=0.19", "wandb>=0.31", "peft>=0.13"],
    "eval": ["sacrebleu>=2.4", "matplotlib>=3.8", "wandb>=0.31"],
    "models": ["gguf>=0.10"],
}
extras["dev"] = sorted({d for v in extras.values() for d in v} | {"pytest>=8", "hypothesis>=6"})
extras["all"] = extras["dev"]

setup(
    name="adaptive-decoder",
    version="0.1.0",
    description="Let a frozen Hugging Face causal LM choose its own temperature / top-p / top-k (AdaptiveDecoder + LPO, HAG baseline)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["adaptive_decoder", "adaptive_decoder.*"]),
    package_data={"adaptive_decoder": ["data/*.jsonl", "data/*.json", "data/*.txt"]},
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
    ],
    extras_require=extras,
)
