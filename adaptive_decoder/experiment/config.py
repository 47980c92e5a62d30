"""`ExperimentConfig`: what an experiment runs (tasks, split sizes, seeds, levels, head, collection, LPO and
evaluation options), checked when it is built. The collection, LPO and evaluation options are deltas of the stage
dataclasses their fields name; `stage_config` composes a stage's typed config (`adaptive_decoder.experiment.stage_configs`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Annotated


from ..configs import StageOf, as_mapping, check_backend
from ..modeling.model_args import ModelArguments
from ..evaluation.results import LEVEL_METHOD
from .stage_configs import check_delta, stage_class, stage_config, stage_fields


LEVELS = tuple(LEVEL_METHOD)  # ("sequence", "token")
SPLIT_KEYS = ("num_train", "num_dev", "num_test")


@dataclass
class ExperimentConfig(ModelArguments):
    """The whole experiment (YAML via `experiments/run.py --config`, CLI flags override; unknown keys are errors); the
    base LM's fields are `ModelArguments`'."""

    run_dir: str = field(default=None, metadata={"help": "Directory for every output of the run (created; rerun = resume)."})
    chat: bool | None = field(default=None, metadata={"help": "Chat template (default: when the tokenizer has one)."})
    tasks: dict | str | None = field(default=None, metadata={
        "help": "task name -> options: the task's options (`task:`, path, hf_id, reward, num_fewshot, template, ...; see "
                "adaptive_decoder.tasks.recipe) plus optional per-task num_train / num_dev / num_test. JSON on the CLI."})
    num_train: int = field(default=16, metadata={"help": "Train prompts per task (collection), unless the task sets its own."})
    num_dev: int = field(default=4, metadata={
        "help": "Dev prompts per task (the oracle's choice), unless the task sets its own."})
    num_test: int = field(default=8, metadata={
        "help": "Test prompts per task (the reported numbers), unless the task sets its own."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/dev/test split (shared by all seeds)."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={
        "help": "Seeds: each one reruns collection, training and evaluation sampling."})
    levels: list[str] = field(default_factory=lambda: ["sequence", "token"], metadata={
        "help": f"Heads to train: {LEVELS} (ADseq, ADtok)."})
    head: dict | str | None = field(default=None, metadata={
        "help": "AdaptiveDecoderConfig options of the heads (bins, factors, num_layers, ...); level is set per head."})
    max_new_tokens: int = field(default=48, metadata={
        "help": "Generation length cap, in collection and evaluation alike (a task's own max_new_tokens option overrides it for "
                "that task)."})
    stop_when_scored: bool = field(default=False, metadata={
        "help": "Stop each sample once its task's scored text is final (e.g. its first line), in collection and "
                "evaluation alike: the rewards and every scored text are unchanged, the unscored rest is not decoded "
                "(see EvalConfig.stop_when_scored for what else it shortens)."})
    backend: str = field(default="hf", metadata={
        "help": "Where the collection and the evaluation sample: 'hf' (transformers generate) or 'vllm' (one vLLM engine "
                "per collect or eval stage, adaptive_decoder.integrations.vllm.backend; run the experiment in the venv of "
                "`make setup-vllm`). The HF model still gives the head inputs, token tables and scores, and the LPO "
                "stage draws no samples (it trains on the collection). A run is resumed only under the backend "
                "that began it: the two draw different samples for the same seeds."})
    collect: Annotated[dict | str | None, StageOf("adaptive_decoder.lpo.store:CollectionSettings")] = field(
        default=None, metadata={"help": "adaptive_decoder.lpo.store.CollectionSettings options (num_samples, epsilon, "
                                        "prompts_per_batch, ...)."})
    lpo: Annotated[dict | str | None, StageOf("adaptive_decoder.lpo.config:LPOConfig")] = field(default=None, metadata={
        "help": "adaptive_decoder.lpo.config.LPOConfig options (beta, learning_rate, num_train_epochs, loss_type, ...)."})
    methods: list[str] = field(default_factory=lambda: ["greedy", "fixed", "random", "oracle", "adaptive"],
                               metadata={
                                   "help": "Evaluation methods (adaptive = the trained heads); add 'hag' / 'hag_untrained' for "
                                           "HAG."})
    temperatures: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                      metadata={"help": "Fixed-temperature grid (baselines and the oracle's candidates)."})
    hag_model_path: str | None = field(default=None, metadata={
        "help": "A trained HAG model (training/train_hag.py output): adds method 'hag' with it."})
    reuse_from: str | None = field(default=None, metadata={
        "help": "A finished run_dir to start from, for an ablation of training: its collections and the evaluation "
                "units of methods without a trained head are copied when their settings are this run's (see "
                "adaptive_decoder.experiment.reuse)."})
    reuse_collections: bool = field(default=True, metadata={
        "help": "With reuse_from: copy its collections too (an ablation of training). False: collect again and "
                "copy only the evaluation units of the methods without a trained head (an ablation of the head or "
                "of collection: factors, bins, num_samples, pairing of new samples)."})
    eval: Annotated[dict | str | None, StageOf("adaptive_decoder.evaluation.config:EvalConfig")] = field(
        default=None, metadata={"help": "evaluation.config.EvalConfig options (num_samples, batch_size, fluency, "
                                        "method_options, ...)."})
    n_bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples for CIs and p-values."})
    report_to: str = field(default="none", metadata={
        "help": "'none' or 'wandb' (offline unless WANDB_MODE says otherwise) for the LPO and eval stages."})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars."})
    plots: bool = field(default=True, metadata={"help": "Write the PNG plots."})
    push_to_hub: bool = field(default=False, metadata={
        "help": "At the end, upload the first seed's head of each level with its model card (the run's results "
                "table included) to hub_model_id (with several levels: hub_model_id-<level>)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "The Hub model repo (user/name) push_to_hub writes."})
    hub_private_repo: bool | None = field(default=None, metadata={
        "help": "Create the Hub repo private (None: the account's default)."})

    def __post_init__(self):
        if not self.run_dir:
            raise ValueError("run_dir is required")
        super().__post_init__()  # dtype resolved: every stage fingerprint holds the one that runs
        from ..tasks.recipe import check_entries, task_entries

        self.tasks = task_entries(self.tasks)
        if not self.tasks:
            raise ValueError("tasks is empty: configure at least one task (e.g. tasks: {gsm8k: {}, constrained_writing: {}})")
        check_entries(self.tasks)
        for name in ("head", "collect", "lpo", "eval"):
            setattr(self, name, as_mapping(name, getattr(self, name)))
        self._check_nested()
        bad = sorted(set(self.levels) - set(LEVELS))
        if bad or not self.levels or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels must be distinct values from {LEVELS}, got {self.levels}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {self.seeds}")
        for name in ("num_train", "num_test", "max_new_tokens", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_dev < 0:
            raise ValueError(f"num_dev must be >= 0, got {self.num_dev}")
        for t in self.tasks:
            n = self.split_sizes(t)
            if n["num_train"] < 1 or n["num_test"] < 1 or n["num_dev"] < 0:
                raise ValueError(f"task {t!r}: need num_train >= 1, num_test >= 1, num_dev >= 0; got {n}")
            from ..hag import policy as _hag_methods  # noqa: F401  (registers the methods "hag" and "hag_untrained")
            from ..methods.base import method_traits

            fitted = [m for m in self.methods if method_traits(m).needs_dev]
            if fitted and n["num_dev"] < 1:
                raise ValueError(f"task {t!r}: method(s) {fitted} need dev prompts (num_dev >= 1)")
        if not self.reuse_collections and not self.reuse_from:
            raise ValueError("reuse_collections: false says what to copy from reuse_from, which is not set")
        if self.hag_model_path and "hag" not in self.methods:
            self.methods = [*self.methods, "hag"]
        if "hag" in self.methods and not self.hag_model_path and "hag" not in (self.eval.get("method_options") or {}):
            raise ValueError("method 'hag' needs hag_model_path (a model saved by training/train_hag.py); "
                             "use 'hag_untrained' to let the base model propose its own config")
        check_backend(self.backend)
        if self.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError("backend 'vllm' needs vLLM, which this Python cannot import: run the experiment in the "
                             "venv that `make setup-vllm` builds (.venv-vllm/bin/python)")
        if self.report_to not in ("none", "wandb"):
            raise ValueError(f"report_to must be 'none' or 'wandb', got {self.report_to!r}")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id: the Hub repo to publish the trained head to (user/name)")
        if "adaptive" not in self.methods:
            raise ValueError("methods must include 'adaptive' (the trained heads are what the experiment tests)")
        if not self.temperatures or "fixed" not in self.methods:
            raise ValueError("methods must include 'fixed' with a non-empty temperatures grid (the bar compares to it)")

    def _check_nested(self):
        from ..modeling.head import AdaptiveDecoderConfig

        for name in stage_fields(self):
            check_delta(name, stage_class(self, name), getattr(self, name))
        unknown = sorted(set(self.head) - set(AdaptiveDecoderConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"head: unknown key(s) {unknown}; valid: {sorted(AdaptiveDecoderConfig.__dataclass_fields__)}")
        if "level" in self.head or "hidden_size" in self.head:
            raise ValueError("head: 'level' comes from `levels` and 'hidden_size' from the model; remove them")

    def stage_config(self, kind: str, seed: int, level: str | None = None):
        """The typed config of stage `kind` of `seed`: the `CollectionSettings` of "collect", the `LPOConfig` of
        "train" (both per head `level`), the `EvalConfig` of "eval" (`stage_configs.stage_config`)."""
        return stage_config(self, kind, seed, level)

    def split_sizes(self, task: str) -> dict:
        """A task's own num_train / num_dev / num_test here, else its task file's `splits:`, else the top level."""
        from ..tasks import TASKS, find_task_file, load_task_spec
        from ..tasks.recipe import task_id

        opts = self.tasks[task]
        name = task_id(task, opts)
        path = None if name in TASKS else find_task_file(name)
        own = load_task_spec(path)["splits"] if path else {}
        return {k: int(opts.get(k, own.get(k, getattr(self, k)))) for k in SPLIT_KEYS}

    def task_options(self, task: str) -> dict:
        """The evaluation-task options of `task` (without the split sizes)."""
        return {k: v for k, v in self.tasks[task].items() if k not in SPLIT_KEYS}

    def build_task(self, task: str):
        """The `Task` of entry `task`, as collection, HAG search and evaluation all build it."""
        from ..tasks.recipe import build_task

        return build_task(task, self.tasks[task], SPLIT_KEYS)
