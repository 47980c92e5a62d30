"""adaptive-decoder: let a frozen causal LM choose its own decoding hyperparameters.

Core pieces: `AdaptiveDecoderHead` (the head), `AdaptiveDecodingModel` (generate with it),
`apply_sampling_params` (per-row temperature/top-k/top-p), `load_base_model` (HF id, dir or embedded GGUF).
"""

from .modeling.generation import AdaptiveDecodingModel, AdaptiveGenerateOutput, compute_head_inputs
from .modeling.head import FACTORS, AdaptiveDecoderConfig, AdaptiveDecoderHead
from .hag.policy import HAGPolicy, ParseStats, format_config, parse_config
from .lpo.losses import collate_pairs, compute_loss, lpo_loss, nll_loss, pair_log_probs
from .modeling.models import encode_prompts, load_base_model
from .experiment.config import ExperimentConfig
from .experiment.pipeline import run_experiment
from .evaluation.config import EvalConfig
from .evaluation.harness import run_evaluation
from .lpo.pairs import PairDataset, build_pairs
from .methods.policies import DecodingPolicy, PolicyOutput, build_policies
from .rewards import build_reward
from .modeling.sampling import apply_sampling_params
# registers an exported directory's model type with transformers' Auto classes, so AutoModelForCausalLM loads it
# with its head (and without this package transformers refuses it by name rather than dropping the head)
from .integrations.vllm import hf_auto as _hf_auto  # noqa: F401

__version__ = "0.1.0"

# The LPO trainer pulls in `transformers.Trainer` (and accelerate): imported on first use, not with the package.
_LAZY = {"LPOConfig": "lpo.config", "LPOTrainer": "lpo.trainer", "build_head_and_dataset": "lpo.data"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FACTORS",
    "AdaptiveDecoderConfig",
    "AdaptiveDecoderHead",
    "AdaptiveDecodingModel",
    "AdaptiveGenerateOutput",
    "apply_sampling_params",
    "compute_head_inputs",
    "encode_prompts",
    "load_base_model",
    "PairDataset",
    "build_pairs",
    "build_reward",
    "HAGPolicy",
    "ParseStats",
    "format_config",
    "parse_config",
    "collate_pairs",
    "compute_loss",
    "lpo_loss",
    "nll_loss",
    "pair_log_probs",
    "LPOConfig",
    "LPOTrainer",
    "build_head_and_dataset",
    "DecodingPolicy",
    "PolicyOutput",
    "build_policies",
    "EvalConfig",
    "ExperimentConfig",
    "run_experiment",
    "run_evaluation",
]
