"""`EvalConfig`: what the suite evaluates (tasks, prompt counts, methods and their options, the temperature grid,
heads, samples) and the subset of it that changes results (`result_fingerprint`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..modeling.noise import NOISE_VERSION
from ..hag import policy as _hag_methods  # noqa: F401  (registers the methods "hag" and "hag_untrained")
from ..modeling.model_args import ModelArguments
from ..methods.policies import DEFAULT_TEMPERATURES
from ..methods.base import POLICIES, method_traits
from ..configs import Managed, as_mapping, check_backend
from ..storage import RecordKind
from ..tasks import TASKS
from ..tasks.identity import task_digest, unrecorded_contents
from ..tasks.recipe import build_task, check_entries, task_entries



@dataclass
class EvalConfig(ModelArguments):
    """Configuration of `run_evaluation` (YAML via `eval/run_suite.py --config`, CLI flags override); the base LM's
    fields are `ModelArguments`'. The fields typed `Managed[...]`, and the base LM's, are the ones the experiment sets
    for each eval stage (`adaptive_decoder.configs.Managed`)."""

    chat: Managed[bool | None] = field(default=None, metadata={
        "help": "Use the chat template (default: when the tokenizer has one)."})
    tasks: Managed[dict | str | None] = field(
        default_factory=lambda: {"gsm8k": {}, "translation": {}, "constrained_writing": {}, "creative_writing": {}},
        metadata={"help": f"task name -> options (YAML/JSON on the CLI): the task's options (`task:`, path, hf_id, reward, "
                          f"num_fewshot, ...; adaptive_decoder.tasks.recipe) and its own num_prompts. Without path/hf_id a "
                          f"task uses its built-in prompt set. Registered tasks: {sorted(TASKS)}, or a task file."})
    task_options: dict | str | None = field(default=None, metadata={
        "help": "Not read: write each task's options under its name in `tasks`."})
    num_prompts: Managed[int] = field(default=20, metadata={"help": "Test prompts per task (deterministic subset)."})
    num_dev_prompts: Managed[int] = field(default=10, metadata={
        "help": "Held-out dev prompts per task for the oracle (disjoint from test)."})
    methods: Managed[list[str]] = field(default_factory=lambda: ["greedy", "fixed", "random", "oracle"],
                               metadata={"help": f"Methods; valid: {sorted(POLICIES)}."})
    temperatures: Managed[list[float]] = field(default_factory=lambda: list(DEFAULT_TEMPERATURES),
                                      metadata={"help": "Fixed-temperature grid (method 'fixed' and the oracle's candidates)."})
    fixed_top_p: float = field(default=1.0, metadata={"help": "top_p used by every fixed-grid setting (1.0 = off)."})
    fixed_top_k: int = field(default=0, metadata={"help": "top_k used by every fixed-grid setting (0 = off)."})
    head_paths: Managed[list[str]] = field(default_factory=list, metadata={
        "help": "Saved AdaptiveDecoder heads for method 'adaptive' (ADseq/ADtok)."})
    skip_missing_heads: Managed[bool] = field(default=False, metadata={
        "help": "Drop head paths that do not exist (with a warning) instead of failing."})
    strict_base_model: bool = field(default=True, metadata={
        "help": "Refuse a head whose recorded base model differs from `model`."})
    method_options: dict | str | None = field(default=None, metadata={
        "help": "Extra options per method, e.g. {hag: {adapter_path: ...}} (JSON on the CLI)."})
    num_samples: int = field(default=4, metadata={"help": "Samples per prompt (k); diversity metrics compare them."})
    max_new_tokens: Managed[int] = field(default=64, metadata={"help": "Generation length cap."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call (each with num_samples rows)."})
    seed: Managed[int] = field(default=0, metadata={"help": "Seed of the prompt subsets and of the token sampling."})
    fluency: bool = field(default=True, metadata={"help": "Score fluency with the base LM (one extra forward per sample)."})
    on_bad_line: str = field(default="fail", metadata={
        "help": "Malformed data line: 'fail' (error naming the line) or 'skip' (warn)."})
    output_dir: Managed[str] = field(default="outputs/eval", metadata={
        "help": "Where units.jsonl, results.json/.md and plots go."})
    n_bootstrap: Managed[int] = field(default=2000, metadata={"help": "Bootstrap resamples for CIs and p-values."})
    plots: bool = field(default=True, metadata={"help": "Write the PNG plots."})
    report_to: Managed[str] = field(default="wandb", metadata={
        "help": "'wandb' (offline unless WANDB_MODE says otherwise) or 'none'."})
    wandb_project: str = field(default="adaptive-decoder-eval", metadata={"help": "wandb project name."})
    run_name: str | None = field(default=None, metadata={"help": "wandb run name (default: output_dir's name)."})
    progress: Managed[bool] = field(default=True, metadata={"help": "Show a tqdm progress bar."})
    backend: Managed[str] = field(default="hf", metadata={
        "help": "Where the methods sample: 'hf' (transformers generate) or 'vllm' (one vLLM engine with the "
                "adaptive-decoder plugin, for every method: adaptive_decoder.integrations.vllm.backend; run it in the "
                "venv of `make setup-vllm`). Same seeds give every method the same noise on either backend, but the "
                "two backends draw different samples. Scoring, units, resume and reports are the same."})
    stop_when_scored: Managed[bool] = field(default=False, metadata={
        "help": "Stop each sample once its task's scored text is final (Task.stop_predicate: the first line, for "
                "tasks scored on it), instead of decoding the unscored rest up to max_new_tokens. Every scored text, "
                "reward and sequence-level choice is unchanged; the stored completions and token counts end there, "
                "and so do a token-level head's per-step choices (and MeanShift's mean of them). Both backends "
                "end a row at the same token."})
    vllm_options: dict | str | None = field(default=None, metadata={
        "help": "backend 'vllm' only: VLLMEngine options {max_model_len, max_num_seqs, kv_cache_gib, block_size, "
                "prompts_per_call, share_prefix, in_process} (JSON on the CLI)."})

    def __post_init__(self):
        super().__post_init__()  # dtype resolved: the fingerprint (and results.json) hold the one that runs
        if self.task_options:
            import yaml

            opts = yaml.safe_dump(as_mapping("task_options", self.task_options), default_flow_style=True, width=1 << 16)
            raise ValueError(f"task_options is no longer read: write each task's options under its name in tasks "
                             f"(tasks: {opts.strip()})")
        self.tasks = task_entries(self.tasks)
        check_entries(self.tasks)
        for name in ("method_options", "vllm_options"):
            v = getattr(self, name)
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{name} must be a JSON object, got {v!r} ({e})") from None
            v = dict(v or {})
            setattr(self, name, v)
        for t, opts in self.tasks.items():
            if int(opts.get("num_prompts", self.num_prompts)) < 1:
                raise ValueError(f"tasks.{t}.num_prompts must be >= 1, got {opts['num_prompts']}")
        unknown = sorted(set(self.methods) - set(POLICIES))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; valid: {sorted(POLICIES)}")
        if not self.tasks or not self.methods:
            raise ValueError("give at least one task and one method")
        if self.on_bad_line not in ("fail", "skip"):
            raise ValueError(f"on_bad_line must be 'fail' or 'skip', got {self.on_bad_line!r}")
        check_backend(self.backend, self.vllm_options)
        if self.report_to not in ("wandb", "none"):
            raise ValueError(f"report_to must be 'wandb' or 'none', got {self.report_to!r}")
        for name in ("num_prompts", "num_samples", "max_new_tokens", "batch_size", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        fitted = [m for m in self.methods if method_traits(m).needs_dev]
        if fitted and self.num_dev_prompts < 1:
            raise ValueError(f"method(s) {fitted} need num_dev_prompts >= 1 (the held-out dev split they are tuned on)")

    # fields whose change invalidates finished units (checked on resume)
    _RESULT_FIELDS = ("model", "dtype", "chat", "task_options", "num_prompts", "num_dev_prompts", "temperatures",
                      "fixed_top_p", "fixed_top_k", "num_samples", "max_new_tokens", "batch_size", "seed", "fluency")

    def task_prompts(self, task: str) -> int:
        """Test prompts of `task`: its own num_prompts, else the run's."""
        return int(self.tasks[task].get("num_prompts", self.num_prompts))

    def fingerprint(self) -> dict:
        # head_paths and method_options are not here: adding a head or a method (with its options) to a finished
        # run only adds units. The Evaluator checks them per method instead: a head's weights, and the options of
        # every method that already has units (a head retrained in place must not reuse the old head's units).
        fp = {k: getattr(self, k) for k in self._RESULT_FIELDS if k != "task_options"}
        fp["task_options"] = task_fingerprint(self.tasks)
        # what each task resolves to (its task file, option defaults, data file), which its options do not show
        fp["task_contents"] = {t: task_digest(build_task(t, o, EVAL_KEYS)) for t, o in self.tasks.items()}
        # every option at its value, off included (`storage.record`): the backend draws the samples with the noise
        # scheme of this version (`modeling.noise`: another scheme draws other samples for the same seeds);
        # stop_when_scored ends the stored completions; `load` holds the loading options that change outputs
        # (revision, attention kernel, quantization, remote code), {} when none is set
        fp.update(backend=self.backend, noise_scheme=NOISE_VERSION, stop_when_scored=self.stop_when_scored,
                  load=self.load_identity())
        return fp


# what an evaluation fingerprint of format 0 meant by leaving an option out: the option was off. Its noise scheme
# is the vLLM one it recorded as `vllm_noise`, else None (HF's batch-seeded draws): never this version's, so a
# format-0 run is refused by name (`noise_scheme`) rather than extended with samples drawn another way
_ABSENT_IN_V0 = {"backend": "hf", "noise_scheme": None, "stop_when_scored": False, "load": {}}


def fingerprint_v0(old: dict) -> dict:
    """An evaluation fingerprint of format 0 in the current layout: its result fields (a record that held the whole
    EvalConfig keeps only those), the options it left out at the value their absence meant, and its task options
    in `task_fingerprint`'s form."""
    keep = set(EvalConfig._RESULT_FIELDS) | set(_ABSENT_IN_V0)
    fp = {**json.loads(json.dumps(_ABSENT_IN_V0)), **{k: v for k, v in old.items() if k in keep}}
    if "noise_scheme" not in old:
        fp["noise_scheme"] = old.get("vllm_noise")
    fp["task_options"] = task_fingerprint(old.get("task_options") or {})
    return fp


def _run_config_v0(rec: dict) -> dict:
    methods = rec.get("methods")
    if not isinstance(methods, dict):  # the options of every method in one field, as format 0 first kept them
        methods = dict(rec.get("method_options") or {})
    return {**fingerprint_v0(rec), "heads": rec.get("heads") or {}, "methods": methods}


# run_config.json: the fingerprint, and per head and per method what its finished units were computed with (the
# harness checks those only for methods that have units, so they are state, not identity)
RUN_CONFIG = RecordKind("run_config.json", "evaluation output directory", version=2, state=("heads", "methods"),
                        migrations={0: _run_config_v0, 1: unrecorded_contents})


EVAL_KEYS = ("num_prompts",)  # the per-task keys the evaluation reads itself; the rest go to the task


def task_fingerprint(tasks: dict) -> dict:
    """The task options that change results, as recorded in run_config.json (a task without options is left
    out, so runs recorded before `tasks:` held the options compare equal)."""
    return {t: dict(o) for t, o in tasks.items() if o}
