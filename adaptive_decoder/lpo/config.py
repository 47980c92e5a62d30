"""`LPOConfig`: the options of an LPO run, as `transformers.TrainingArguments` plus the method's own fields.

TRL's convention: the Trainer's fields keep their names and meaning (learning_rate, per_device_train_batch_size,
save_steps, deepspeed, ...), and only what LPO adds is declared here: the pairs (from a collection or synthetic),
the head to train, the loss and its reference, and the run's bookkeeping. The Trainer fields whose transformers
defaults do not suit a tiny head trained for a few hundred steps are redeclared with LPO's defaults. Every
invalid value is refused here, with the field's name, before any process group or model exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from ..configs import Managed, as_mapping
from ..modeling.head import AdaptiveDecoderConfig
from .expected_reward import ADVANTAGE_SCALES, ESTIMATORS, GROUP_LOSS_TYPES
from .losses import AGGREGATIONS, LOSS_TYPES, NEEDS_RESPONSE_LOGPS

REFERENCES = ("initial", "none")


@dataclass
class LPOConfig(TrainingArguments):
    """LPO's own options on top of `TrainingArguments` (YAML `--config` + CLI overrides via `TrlParser`). The fields
    typed `Managed[...]` are the ones the experiment sets for each train stage (`adaptive_decoder.configs.Managed`)."""

    # --- data ---------------------------------------------------------------------------------------------
    collection_dir: Managed[str | None] = field(default=None, metadata={
        "help": "Sample collection made by training/collect.py (preference pairs are built from it)."})
    pair_mode: str = field(default="best_vs_worst", metadata={"help": "best_vs_worst | top_k_vs_bottom_k | all_pairs."})
    pair_k: int = field(default=2, metadata={"help": "k of top_k_vs_bottom_k."})
    pair_eps: float = field(default=1e-6, metadata={"help": "Rewards within eps are a tie: the pair is skipped (and counted)."})
    tasks: Managed[list[str] | None] = field(default=None, metadata={
        "help": "Train on these tasks of the collection only (default: all)."})
    use_cache: bool = field(default=True, metadata={
        "help": "Read head inputs from the collection's hidden-state cache; False = always recompute with the LM."})
    base_model: Managed[str | None] = field(default=None, metadata={
        "help": "Base LM to load ONLY when some pair samples are not cached (must be the collection's model; it loads "
                "with the dtype and loading options its manifest recorded)."})
    synthetic_pairs: Managed[int] = field(default=0, metadata={
        "help": "Instead of a collection: N synthetic pairs (smoke tests; two tasks that prefer the lowest / highest bin)."})
    synthetic_hidden_size: Managed[int] = field(default=16, metadata={"help": "Hidden size of the synthetic pairs."})
    # --- head ---------------------------------------------------------------------------------------------
    head_path: Managed[str | None] = field(default=None, metadata={
        "help": "Saved head to start from (e.g. the collecting head or a previous round)."})
    head: Managed[dict | str | None] = field(default_factory=dict, metadata={
        "help": "Options of a fresh head (num_layers, intermediate_size, dropout; bins/factors/level default to the "
                "collection's). A mapping, or YAML/JSON text on the CLI (as `wandb agent` passes it)."})
    head_init_seed: Managed[int] = field(default=0, metadata={"help": "Seed of a fresh head's initialisation."})
    # --- loss ---------------------------------------------------------------------------------------------
    loss_type: str = field(default="lpo", metadata={
        "help": f"{LOSS_TYPES}: LPO on the latent choices (separate), the NLL-on-chosen baseline, joint (temperatures as tokens "
                "with the LM's response term), latent (temperature marginalised per token) or expected_reward "
                "(mean reward - beta * KL on whole prompt groups, lpo.expected_reward; see expected_reward_estimator)."})
    beta: float = field(default=0.1, metadata={
        "help": "LPO strength beta; for expected_reward the weight of KL(head || reference), the same beta."})
    importance_clip: float = field(default=10.0, metadata={
        "help": "expected_reward, policy_gradient: importance weights pi / mu above this count as this (bounds their variance)."})
    advantage_scale: str = field(default="none", metadata={
        "help": f"expected_reward, {ADVANTAGE_SCALES}: advantages = reward - prompt mean, or that / the prompt's spread."})
    expected_reward_estimator: str = field(default="policy_gradient", metadata={
        "help": f"expected_reward, {ESTIMATORS}: both maximise mean reward - beta * KL(head || reference). "
                "policy_gradient follows its gradient with truncated importance weights (for small steps near the "
                "collecting head; from a skewed reference it can settle on the reference's most probable bin); "
                "regression fits beta * log(pi / pi_ref) to the group-relative rewards (REBEL), whose minimum is the "
                "optimum pi_ref * exp(Q / beta) / Z from any start (pick it to reach that optimum; needs reference "
                "'initial')."})
    reference: str = field(default="initial", metadata={
        "help": f"{REFERENCES}: frozen copy of the initial head as pi_ref, or no reference terms (paper Eq. 10)."})
    token_aggregation: str = field(default="sum", metadata={
        "help": f"{AGGREGATIONS}: how token-level log-probs combine over the steps of a sample."})
    # --- run bookkeeping ----------------------------------------------------------------------------------
    resume: Managed[bool] = field(default=False, metadata={
        "help": "Continue from the newest complete checkpoint in output_dir (fresh start if none)."})
    overwrite_output_dir: Managed[bool] = field(default=False, metadata={
        "help": "Allow a fresh (non-resume) run into an output_dir that has checkpoints."})
    wandb_project: str = field(default="adaptive-decoder", metadata={"help": "wandb project."})
    torch_threads: Managed[int | None] = field(default=None, metadata={"help": "torch.set_num_threads per process (CPU)."})
    progress: Managed[bool] = field(default=True, metadata={"help": "tqdm progress bar on the main process."})
    plot: bool = field(default=True, metadata={"help": "Write training_curves.png and bin_histograms.png at the end."})
    # --- TrainingArguments with LPO's defaults --------------------------------------------------------------
    seed: Managed[int] = field(default=42, metadata={"help": "Random seed set at the start of training."})
    output_dir: Managed[str | None] = field(default=None, metadata={
        "help": "Run directory: head/, checkpoint-N/, metrics.jsonl, plots."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    lr_scheduler_type: str = field(default="cosine", metadata={
        "help": "transformers scheduler name (constant, linear, cosine, ...)."})
    per_device_train_batch_size: int = field(default=16, metadata={
        "help": "Pairs (expected_reward: prompt groups) per process per micro-batch."})
    num_train_epochs: float = field(default=3, metadata={"help": "Passes over the pairs (ignored when max_steps > 0)."})
    logging_steps: float = field(default=10, metadata={"help": "Log metrics every N optimizer steps (and at the last one)."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every N optimizer steps (and at the end)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep this many newest checkpoints."})
    report_to: Managed[None | str | list[str]] = field(default="wandb", metadata={
        "help": "'wandb' (offline unless WANDB_MODE says otherwise) or 'none'. metrics.jsonl is always written."})
    push_to_hub: Managed[bool] = field(default=False, metadata={
        "help": "At the end, upload the final head with its model card to hub_model_id (checkpoints stay local)."})
    hub_model_id: Managed[str | None] = field(default=None, metadata={
        "help": "The Hub model repo (user/name) push_to_hub creates or updates."})
    # a pair batch is a dict the collator builds; the Trainer's column filter would drop every key of it
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "Keep False: the pair collator's keys are not forward() arguments."})

    def __post_init__(self):
        self.head = as_mapping("head", self.head)  # a dict from YAML, text from the CLI or a sweep agent
        if not self.output_dir:
            raise ValueError("output_dir is required")
        if bool(self.collection_dir) == bool(self.synthetic_pairs):
            raise ValueError("give exactly one data source: collection_dir (a collection) or synthetic_pairs > 0")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.synthetic_pairs and self.loss_type in NEEDS_RESPONSE_LOGPS:
            raise ValueError(f"loss_type {self.loss_type!r} needs the LM's token log-probs of real samples: "
                             "synthetic pairs have none (use a collection_dir)")
        if self.synthetic_pairs and self.loss_type in GROUP_LOSS_TYPES:
            raise ValueError(f"loss_type {self.loss_type!r} trains on a collection's prompt groups and their exploration "
                             "probabilities: synthetic pairs have neither (use a collection_dir)")
        if self.advantage_scale not in ADVANTAGE_SCALES:
            raise ValueError(f"advantage_scale must be one of {ADVANTAGE_SCALES}, got {self.advantage_scale!r}")
        if self.expected_reward_estimator not in ESTIMATORS:
            raise ValueError(f"expected_reward_estimator must be one of {ESTIMATORS}, got {self.expected_reward_estimator!r}")
        if self.expected_reward_estimator == "regression" and self.reference == "none":
            raise ValueError("expected_reward_estimator 'regression' fits beta * log(pi / pi_ref): it needs "
                             "reference 'initial', got 'none'")
        if not self.importance_clip > 0:
            raise ValueError(f"importance_clip must be > 0, got {self.importance_clip}")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id: the Hub repo to publish the trained head to (user/name)")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.token_aggregation not in AGGREGATIONS:
            raise ValueError(f"token_aggregation must be one of {AGGREGATIONS}, got {self.token_aggregation!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                     "save_total_limit"):
            if getattr(self, name) is None or getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps <= 0 and self.num_train_epochs < 1:
            raise ValueError("set num_train_epochs >= 1 or max_steps > 0")
        if self.report_to not in ("wandb", "none", ["wandb"], ["none"], [], None):
            raise ValueError(f"report_to must be 'wandb' or 'none', got {self.report_to!r}")
        unknown = sorted(set(self.head) - set(AdaptiveDecoderConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown head options {unknown}; valid: {sorted(AdaptiveDecoderConfig.__dataclass_fields__)}")
        self.disable_tqdm = not self.progress
        self.run_name = self.run_name or Path(self.output_dir).name
        if not torch.cuda.is_available():
            self._place_on_cpu()
        super().__post_init__()

    def _place_on_cpu(self):
        """Without a GPU, accelerate forms a process group (DDP over gloo) only when told it runs on CPU, and it
        never starts DeepSpeed in CPU mode; DeepSpeed on CPU instead needs cpu=False plus an explicit gloo backend
        (DeepSpeed's CPU accelerator does the rest). `TrainingArguments(deepspeed=json)` passes no backend to
        accelerate, which then counts one process per rank (seen under torchrun: both ranks logged as process 0
        and raced to rename the same checkpoint); the path `accelerate launch` takes, the DeepSpeed config in the
        environment, does pass `ddp_backend`. So a `deepspeed` json on CPU goes that way."""
        if self.deepspeed:
            if not isinstance(self.deepspeed, str):
                raise ValueError("on CPU, deepspeed must be the path of a DeepSpeed json")
            os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
            os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"] = os.path.abspath(self.deepspeed)
            self.deepspeed = None
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            self.ddp_backend = "gloo"
        else:
            self.use_cpu = True

    @property
    def uses_wandb(self) -> bool:
        return "wandb" in (self.report_to if isinstance(self.report_to, list) else [self.report_to])


__all__ = ["REFERENCES", "LPOConfig"]
