"""The reproduction experiment: collect -> LPO-train ADseq / ADtok -> evaluate against every baseline -> aggregate.

One call, `run_experiment(ExperimentConfig(...))`, drives the whole pipeline on top of the other library modules:

    splits       per task, a deterministic split of the task's examples into disjoint train / dev / test prompts
                 (shuffled with `split_seed`; test first, then dev, then train; a prompt text never appears in two
                 splits). The same splits serve every seed, so seeds vary only the sampling and the head init.
    for each seed:
      collect-<level>  LPO samples on the TRAIN prompts with a freshly initialised head exploring
                       (`adaptive_decoder.collection.collect`, rewards = the evaluation rewards of each task)
      train-<level>    LPO on best-vs-worst pairs of that collection (`adaptive_decoder.lpo_trainer.LPOTrainer`),
                       starting from (and referencing) the collecting head
      eval             greedy, the fixed-temperature grid, random, the per-task oracle (fitted on DEV prompts),
                       the trained heads (ADseq / ADtok) and optionally HAG on the TEST prompts
                       (`adaptive_decoder.evaluation.Evaluator`)
    aggregate    per method x task: mean reward with a 95% bootstrap CI over prompts (each prompt's reward averaged
                 over seeds), paired win rates / mean differences with p-values vs every fixed temperature
                 (`adaptive_decoder.stats`); per-task normalized rewards and win rates, their equally weighted
                 means over tasks and the verdict on the bar (`adaptive_decoder.scalefree`); the learned
                 temperature / top-p / top-k distributions per task; `summary.json`, and the plots and `summary.md`
                 that `adaptive_decoder.report` renders from it.

Resume: each stage directory gets a `stage_done.json` (its settings fingerprint, summary and wall time) written
atomically when the stage finishes; a rerun skips finished stages, and an unfinished stage is resumed by the
library it calls (collection manifest, LPO checkpoints, evaluation unit log). A finished stage whose settings
changed is refused (use a new run_dir) rather than silently mixed. The base LM is loaded only if a stage runs.

Everything lives under `run_dir`:
    experiment_config.json, splits.json
    seed-<s>/collect-<level>/  (collection + collect_head/)   seed-<s>/train-<level>/head/   seed-<s>/eval/
    summary.md, summary.json, reward_vs_temperature.png, learned_params.png, paired_differences.png
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import torch

from .configs import as_mapping, changed_keys
from .head_digest import head_fingerprint
from .model_args import ModelArguments
from .policy_base import FIXED_CONFIG_ROLES, role_of
from .report import difference_rows, plot_paired_differences, summary_markdown, summary_plots, verdict_block
from .results import LEVEL_METHOD, OVERALL, choices, compare_with_baselines, same_decoding
from .storage import atomic_write_bytes
from .tasks.base import TaskReward  # in __all__: the collection's reward is the task's own
from .tiny_model import save_tiny_model  # noqa: F401  (in __all__: the tiny experiment config's model)

logger = logging.getLogger(__name__)

LEVELS = tuple(LEVEL_METHOD)  # ("sequence", "token")
SPLIT_KEYS = ("num_train", "num_dev", "num_test")
# keys of the nested option dicts that the experiment sets itself (per seed / per stage)
_MANAGED = {
    "collect": {"seed", "max_new_tokens", "chat"},
    "lpo": {"output_dir", "collection_dir", "head_path", "head", "seed", "resume", "synthetic_pairs",
            "synthetic_hidden_size", "tasks", "base_model", "torch_threads", "progress", "report_to",
            "overwrite_output_dir", "head_init_seed"},
    "eval": {"model", "base_model", "dtype", "device", "torch_threads", "chat", "tasks", "task_options", "num_prompts",
             "num_dev_prompts", "methods", "temperatures", "head_paths", "output_dir", "seed", "max_new_tokens",
             "progress", "report_to", "skip_missing_heads", "n_bootstrap"},
}


@dataclass
class ExperimentConfig(ModelArguments):
    """The whole experiment (YAML via `experiments/run.py --config`, CLI flags override; unknown keys are errors); the
    base LM's fields are `ModelArguments`'."""

    run_dir: str = field(default=None, metadata={"help": "Directory for every output of the run (created; rerun = resume)."})
    chat: bool | None = field(default=None, metadata={"help": "Chat template (default: when the tokenizer has one)."})
    tasks: dict | str | None = field(default=None, metadata={
        "help": "task name -> options: the evaluation task options (path, hf_id, reward, num_fewshot, template, ...; see "
                "adaptive_decoder.tasks) plus optional per-task num_train / num_dev / num_test. JSON on the CLI."})
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
    collect: dict | str | None = field(default=None, metadata={
        "help": "adaptive_decoder.collection.CollectionSettings options (num_samples, epsilon, prompts_per_batch, ...)."})
    lpo: dict | str | None = field(default=None, metadata={
        "help": "adaptive_decoder.lpo_config.LPOConfig options (beta, learning_rate, num_train_epochs, loss_type, ...)."})
    methods: list[str] = field(default_factory=lambda: ["greedy", "fixed", "random", "oracle", "adaptive"],
                               metadata={
                                   "help": "Evaluation methods (adaptive = the trained heads); add 'hag' / 'hag_untrained' for "
                                           "HAG."})
    temperatures: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                      metadata={"help": "Fixed-temperature grid (baselines and the oracle's candidates)."})
    hag_model_path: str | None = field(default=None, metadata={
        "help": "A trained HAG model (training/train_hag.py output): adds method 'hag' with it."})
    eval: dict | str | None = field(default=None, metadata={
        "help": "adaptive_decoder.evaluation.EvalConfig options (num_samples, batch_size, fluency, method_options, ...)."})
    n_bootstrap: int = field(default=2000, metadata={"help": "Bootstrap resamples for CIs and p-values."})
    report_to: str = field(default="none", metadata={
        "help": "'none' or 'wandb' (offline unless WANDB_MODE says otherwise) for the LPO and eval stages."})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars."})
    plots: bool = field(default=True, metadata={"help": "Write the PNG plots."})

    def __post_init__(self):
        if not self.run_dir:
            raise ValueError("run_dir is required")
        super().__post_init__()  # dtype resolved: every stage fingerprint holds the one that runs
        self.tasks = as_mapping("tasks", self.tasks)
        if not self.tasks:
            raise ValueError("tasks is empty: configure at least one task (e.g. tasks: {gsm8k: {}, constrained_writing: {}})")
        from .tasks import check_tasks

        check_tasks(self.tasks)
        self.tasks = {t: as_mapping(f"tasks.{t}", o) for t, o in self.tasks.items()}
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
            from .evaluation import DEV_FITTED

            fitted = [m for m in self.methods if m in DEV_FITTED]
            if fitted and n["num_dev"] < 1:
                raise ValueError(f"task {t!r}: method(s) {fitted} need dev prompts (num_dev >= 1)")
        if self.hag_model_path and "hag" not in self.methods:
            self.methods = [*self.methods, "hag"]
        if "hag" in self.methods and not self.hag_model_path and "hag" not in (self.eval.get("method_options") or {}):
            raise ValueError("method 'hag' needs hag_model_path (a model saved by training/train_hag.py); "
                             "use 'hag_untrained' to let the base model propose its own config")
        if self.report_to not in ("none", "wandb"):
            raise ValueError(f"report_to must be 'none' or 'wandb', got {self.report_to!r}")
        if "adaptive" not in self.methods:
            raise ValueError("methods must include 'adaptive' (the trained heads are what the experiment tests)")
        if not self.temperatures or "fixed" not in self.methods:
            raise ValueError("methods must include 'fixed' with a non-empty temperatures grid (the bar compares to it)")

    def _check_nested(self):
        from .collection import CollectionSettings
        from .evaluation import EvalConfig
        from .head import AdaptiveDecoderConfig
        from .lpo_config import LPOConfig

        valid = {"collect": {f.name for f in fields(CollectionSettings)}, "lpo": {f.name for f in fields(LPOConfig)},
                 "eval": {f.name for f in fields(EvalConfig)}}
        for name, ok in valid.items():
            opts = getattr(self, name)
            managed = sorted(set(opts) & _MANAGED[name])
            if managed:
                raise ValueError(f"{name}: {managed} are set by the experiment itself (use the top-level options); "
                                 f"settable here: {sorted(ok - _MANAGED[name])}")
            unknown = sorted(set(opts) - ok)
            if unknown:
                raise ValueError(f"{name}: unknown key(s) {unknown}; valid: {sorted(ok - _MANAGED[name])}")
        unknown = sorted(set(self.head) - set(AdaptiveDecoderConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"head: unknown key(s) {unknown}; valid: {sorted(AdaptiveDecoderConfig.__dataclass_fields__)}")
        if "level" in self.head or "hidden_size" in self.head:
            raise ValueError("head: 'level' comes from `levels` and 'hidden_size' from the model; remove them")

    def split_sizes(self, task: str) -> dict:
        """A task's own num_train / num_dev / num_test here, else its task file's `splits:`, else the top level."""
        from .tasks import TASKS, find_task_file, load_task_spec

        opts = self.tasks[task]
        path = None if task in TASKS else find_task_file(task)
        own = load_task_spec(path)["splits"] if path else {}
        return {k: int(opts.get(k, own.get(k, getattr(self, k)))) for k in SPLIT_KEYS}

    def task_options(self, task: str) -> dict:
        """The evaluation-task options of `task` (without the split sizes)."""
        return {k: v for k, v in self.tasks[task].items() if k not in SPLIT_KEYS}


# ------------------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------------------
def prompt_group(example: dict) -> str:
    """What must not be shared between splits: the prompt text, except that EQ-Bench creative-writing examples
    ("<prompt key>:<seed index>", one writing prompt filled with different seed modifiers) group by their writing
    prompt, so train and test never hold variants of the same prompt."""
    pid = str(example.get("id", ""))
    if ":" in pid:
        return "key:" + pid.split(":")[0]
    return "prompt:" + example["prompt"]


def split_examples(examples: list[dict], num_test: int, num_dev: int, num_train: int, seed: int, name: str = "task",
                   group=prompt_group) -> dict:
    """Deterministic disjoint {"test", "dev", "train"} lists of examples: shuffle with (name, seed), then fill test,
    dev, train in that order. An example whose group (`prompt_group`: its prompt text, or its EQ-Bench writing
    prompt) already went to another split is skipped, so no prompt appears in two splits."""
    import random

    order = list(range(len(examples)))
    random.Random(f"experiment-split:{name}:{seed}").shuffle(order)
    pos = {i: k for k, i in enumerate(order)}
    groups: dict = {}  # group -> example indices (shuffled order, each prompt text once overall)
    texts: set = set()
    for i in order:
        if examples[i]["prompt"] in texts:
            continue
        texts.add(examples[i]["prompt"])
        groups.setdefault(group(examples[i]), []).append(i)
    glist = list(groups.values())
    want = {"test": num_test, "dev": num_dev, "train": num_train}
    out, g = {}, 0
    for split in ("test", "dev", "train"):  # whole groups go to one split
        chosen: list = []
        while len(chosen) < want[split] and g < len(glist):
            chosen.extend(glist[g])
            g += 1
        if len(chosen) < want[split]:
            raise ValueError(f"task {name!r}: asked for {num_test} test + {num_dev} dev + {num_train} train prompts but "
                             f"it has only {len(texts)} distinct prompts in {len(glist)} groups (a group never spans "
                             f"two splits); the {split} split got {len(chosen)}")
        out[split] = [examples[i] for i in sorted(chosen, key=pos.get)[: want[split]]]
    return out


def make_splits(cfg: ExperimentConfig) -> dict:
    """{task: {"test"|"dev"|"train": [example, ...]}} for the configured tasks (examples from the task registry)."""
    from .tasks import get_task

    out = {}
    for t in cfg.tasks:
        task = get_task(t, **cfg.task_options(t))
        n = cfg.split_sizes(t)
        out[t] = split_examples(task.examples(), n["num_test"], n["num_dev"], n["num_train"], cfg.split_seed, t)
    return out


def splits_digest(splits: dict) -> dict:
    """JSON-able record of a split: ids and a hash of the prompts, per task and split."""
    rec = {}
    for t, parts in splits.items():
        rec[t] = {s: {"ids": [e["id"] for e in exs], "sha256": hashlib.sha256(
            "\n".join(e["prompt"] for e in exs).encode()).hexdigest()[:16]} for s, exs in parts.items()}
    return rec


# ------------------------------------------------------------------------------------------------------------
# Stage bookkeeping
# ------------------------------------------------------------------------------------------------------------
DONE = "stage_done.json"


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def stage_done(stage_dir: Path, fingerprint: dict, normalize=None) -> dict | None:
    """The stage's record if it finished with the same settings; None if it has not finished; error if it
    finished with other settings. `normalize(old_fingerprint)` maps a record written by an older version."""
    path = Path(stage_dir) / DONE
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    old = rec.get("fingerprint", {})
    diff = changed_keys(normalize(old) if normalize else old, _jsonable(fingerprint))
    if diff:
        raise ValueError(f"{stage_dir} finished with different settings ({', '.join(diff)} differ); "
                         "use a new run_dir (or delete that stage directory to redo it)")
    return rec


def mark_done(stage_dir: Path, fingerprint: dict, summary: dict, wall_s: float) -> dict:
    rec = {"fingerprint": _jsonable(fingerprint), "summary": _jsonable(summary), "wall_s": round(wall_s, 2),
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_bytes(Path(stage_dir) / DONE, json.dumps(rec, indent=1).encode())
    return rec


class _Memoized(torch.utils.data.Dataset):
    """Keeps the items of a dataset after their first access (pairs whose head inputs had to be recomputed with
    the LM: a collection made before its cache covered every sample)."""

    def __init__(self, dataset):
        self.dataset, self.items = dataset, {}
        self.stats = getattr(dataset, "stats", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i not in self.items:
            self.items[i] = self.dataset[i]
        return self.items[i]


# ------------------------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------------------------
class Experiment:
    """Runs (or resumes) the stages of an `ExperimentConfig`. `model`/`tokenizer` may be given (tests, notebooks);
    otherwise the base LM is loaded on first need."""

    def __init__(self, cfg: ExperimentConfig, model=None, tokenizer=None):
        from .tasks import get_task

        self.cfg = cfg
        self.root = Path(cfg.run_dir)
        self.model, self.tokenizer = model, tokenizer
        if model is not None:
            from .models import check_model_dtype

            check_model_dtype(model, cfg.dtype)
        self.tasks = {t: get_task(t, **cfg.task_options(t)) for t in cfg.tasks}
        self.splits = {}
        for t, task in self.tasks.items():
            n = cfg.split_sizes(t)
            self.splits[t] = split_examples(task.examples(), n["num_test"], n["num_dev"], n["num_train"], cfg.split_seed, t)
        self.timings: dict = {}
        self.stages_run: list[str] = []
        self.stages_skipped: list[str] = []

    # --- setup ---------------------------------------------------------------------------------------------
    def _prepare_run_dir(self):
        self.root.mkdir(parents=True, exist_ok=True)
        digest = splits_digest(self.splits)
        path = self.root / "splits.json"
        if path.exists():
            old = json.loads(path.read_text())
            changed = sorted(t for t in set(old) & set(digest) if old[t] != digest[t])
            if changed:
                raise ValueError(f"{self.root} was started with other train/dev/test splits for task(s) {changed} "
                                 "(task data, split sizes or split_seed changed); use a new run_dir")
            digest = {**old, **digest}
        atomic_write_bytes(path, json.dumps(digest, indent=1).encode())
        atomic_write_bytes(self.root / "experiment_config.json", json.dumps(_jsonable(asdict(self.cfg)), indent=1).encode())

    def _ensure_model(self):
        if self.model is not None:
            return
        logger.info("loading base model %s", self.cfg.model)
        t0 = time.time()
        self.model, self.tokenizer = self.cfg.load()
        self.timings["load_model"] = round(time.time() - t0, 2)

    def seed_dir(self, seed: int) -> Path:
        return self.root / f"seed-{seed}"

    def head_path(self, seed: int, level: str) -> Path:
        return self.seed_dir(seed) / f"train-{level}" / "head"

    def _train_prompts(self) -> list[dict]:
        return [{**ex, "id": f"{t}/{ex['id']}", "task": t} for t, parts in self.splits.items() for ex in parts["train"]]

    def _run_stage(self, name: str, stage_dir: Path, fingerprint: dict, fn, covers=None, normalize=None):
        """Run `fn` unless the stage finished with this fingerprint (and, if given, `covers(record)` holds)."""
        rec = stage_done(stage_dir, fingerprint, normalize)
        if rec is not None and (covers is None or covers(rec)):
            logger.info("stage %s: already done (%.1f s), skipping", name, rec["wall_s"])
            self.stages_skipped.append(name)
            self.timings[name] = rec["wall_s"]
            return rec
        stage_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        summary = fn()
        # a stage extended after it finished (a method added to an evaluation) reports its whole compute time
        rec = mark_done(stage_dir, fingerprint, summary, time.time() - t0 + (rec["wall_s"] if rec else 0.0))
        self.stages_run.append(name)
        self.timings[name] = rec["wall_s"]
        return rec

    # --- stages --------------------------------------------------------------------------------------------
    def _collect_fingerprint(self, seed, level) -> dict:
        cfg = self.cfg
        return {"model": cfg.model, "dtype": cfg.dtype, "chat": cfg.chat, "head": cfg.head, "level": level, "seed": seed,
                "collect": cfg.collect, "max_new_tokens": cfg.max_new_tokens,
                "train_ids": {t: [e["id"] for e in p["train"]] for t, p in self.splits.items()},
                "rewards": {t: self.tasks[t].reward_spec for t in self.tasks}}

    def collect_stage(self, seed: int, level: str) -> dict:
        out = self.seed_dir(seed) / f"collect-{level}"
        return self._run_stage(f"seed-{seed}/collect-{level}", out, self._collect_fingerprint(seed, level),
                               partial(self._collect, seed, level, out))

    def _collect(self, seed: int, level: str, out: Path) -> dict:
        """The collect stage's work: LPO samples on the train prompts, explored by the seed's collecting head (made
        and saved on first need), and the pair statistics of the collection."""
        from .collection import CollectionSettings, collect
        from .generation import AdaptiveDecodingModel
        from .head import build_head
        from .pairs import collection_pair_report

        cfg = self.cfg
        self._ensure_model()
        head_dir = out / "collect_head"
        saved = (head_dir / "model.safetensors").exists()
        head = build_head({"selection": "sample", **cfg.head, "level": level}, seed, model=self.model,
                          head_path=head_dir if saved else None, model_name=cfg.model)
        if not saved:
            head.save_pretrained(head_dir)
        extra = {}
        if "cache_which" not in cfg.collect and cfg.lpo.get("pair_mode", "best_vs_worst") != "best_vs_worst":
            # pairs beyond best-vs-worst use other samples too: cache them all, or every LPO epoch would
            # recompute their head inputs with the LM (a small MLP epoch becoming an LM forward per sample)
            extra["cache_which"] = "all"
        settings = CollectionSettings(**{**cfg.collect, **extra, "seed": seed, "max_new_tokens": cfg.max_new_tokens,
                                         "chat": cfg.chat})
        rewards = {t: TaskReward(task, self.model, self.tokenizer) for t, task in self.tasks.items()}
        specs = {t: {"reward": task.reward_spec, "task_options": cfg.task_options(t)} for t, task in self.tasks.items()}
        for t, spec in specs.items():  # a task's own generation length, as the evaluation uses it
            if spec["task_options"].get("max_new_tokens"):
                spec["max_new_tokens"] = int(spec["task_options"]["max_new_tokens"])
        adm = AdaptiveDecodingModel(self.model, self.tokenizer, head.to(self.model.device))
        summary = collect(adm, self._train_prompts(), rewards, out, settings, task_specs=specs, progress=cfg.progress)
        summary["pairs"] = collection_pair_report(out, **{k: v for k, v in
                                                          (("mode", cfg.lpo.get("pair_mode")), ("k", cfg.lpo.get("pair_k")),
                                                           ("eps", cfg.lpo.get("pair_eps"))) if v is not None})
        return summary

    def train_stage(self, seed: int, level: str) -> dict:
        out = self.seed_dir(seed) / f"train-{level}"
        fp = {"collect": self._collect_fingerprint(seed, level), "lpo": self.cfg.lpo}
        return self._run_stage(f"seed-{seed}/train-{level}", out, fp, partial(self._train, seed, level, out))

    def _train(self, seed: int, level: str, out: Path) -> dict:
        """The train stage's work: LPO on the pairs of the seed's collection, from (and against) its collecting head."""
        from .lpo_config import LPOConfig
        from .lpo_data import build_head_and_dataset
        from .lpo_trainer import LPOTrainer

        cfg = self.cfg
        collection = self.seed_dir(seed) / f"collect-{level}"
        lcfg = LPOConfig(**{**cfg.lpo, "output_dir": str(out), "collection_dir": str(collection),
                            "head_path": str(collection / "collect_head"), "seed": seed, "resume": True,
                            "torch_threads": cfg.torch_threads, "progress": cfg.progress, "report_to": cfg.report_to,
                            "base_model": cfg.model})
        head, dataset = build_head_and_dataset(lcfg)
        if getattr(dataset, "stats", {}).get("samples_recomputed"):
            dataset = _Memoized(dataset)  # recompute uncached head inputs once, not once per epoch
        trainer = LPOTrainer(lcfg, head, dataset)
        summary = trainer.train()
        summary["pair_stats"] = getattr(dataset, "stats", None)
        summary["final_logs"] = trainer.history[-1] if trainer.history else None
        return summary

    def eval_config(self, seed: int):
        from .evaluation import EvalConfig

        cfg = self.cfg
        sizes = [(len(p["test"]), len(p["dev"])) for p in self.splits.values()]
        opts = dict(cfg.eval)
        mo = opts.get("method_options") or {}
        mo = dict(json.loads(mo) if isinstance(mo, str) else mo)
        random_methods = [m for m in ("random", "random_token", "best_joint") if m in cfg.methods]
        if random_methods:  # random and best-joint configs come from the heads' bins (active factors; fixed otherwise)
            from .head import AdaptiveDecoderConfig

            hc = AdaptiveDecoderConfig.from_dict({**cfg.head, "hidden_size": 1})
            bins = {f"{f}_bins": hc.bins(f) if f in hc.factors else [hc.fixed[f]] for f in ("temperature", "top_p", "top_k")}
            for m in random_methods:
                mo[m] = {**bins, **dict(mo.get(m) or {})}
        if cfg.hag_model_path:
            mo["hag"] = {"model_path": cfg.hag_model_path, **dict(mo.get("hag") or {})}
        opts["method_options"] = mo
        return EvalConfig(**{**opts, "model": cfg.model, "dtype": cfg.dtype, "device": cfg.device,
                             "torch_threads": cfg.torch_threads, "chat": cfg.chat, "tasks": list(cfg.tasks),
                             "task_options": {t: cfg.task_options(t) for t in cfg.tasks},
                             # the real splits are set below; these only have to be valid for every task
                             "num_prompts": min(s[0] for s in sizes), "num_dev_prompts": min(s[1] for s in sizes),
                             "methods": list(cfg.methods), "temperatures": list(cfg.temperatures),
                             "head_paths": [str(self.head_path(seed, lv)) for lv in cfg.levels],
                             "output_dir": str(self.seed_dir(seed) / "eval"), "seed": seed,
                             "max_new_tokens": cfg.max_new_tokens, "progress": cfg.progress,
                             "report_to": cfg.report_to, "n_bootstrap": cfg.n_bootstrap})

    def eval_stage(self, seed: int) -> dict:
        out = self.seed_dir(seed) / "eval"
        ecfg = self.eval_config(seed)
        # the settings that change results (not paths, threads, progress bars). Methods, their options and the
        # heads are left out: adding one (e.g. --hag_model_path, or a token level, after the run) reruns the stage,
        # and the Evaluator computes only the new units (it refuses changed options of methods that have units
        # and changed weights of a head that has units).
        result = _jsonable(ecfg.fingerprint())
        fp = {"eval": result,
              "splits": splits_digest({t: {s: p[s] for s in ("test", "dev")} for t, p in self.splits.items()})}
        wanted = _jsonable({"methods": list(ecfg.methods), "method_options": ecfg.method_options})
        heads = {lv: head_fingerprint(self.head_path(seed, lv)) for lv in self.cfg.levels}
        return self._run_stage(f"seed-{seed}/eval", out, fp, partial(self._evaluate, ecfg, wanted, heads),
                               covers=partial(_eval_covers, wanted=wanted, heads=heads),
                               normalize=partial(_eval_normalize, result_keys=set(result)))

    def _evaluate(self, ecfg, wanted: dict, heads: dict) -> dict:
        """The eval stage's work: the Evaluator on the experiment's test and dev prompts; the stage's summary records
        the methods (with their options) and the head weights it covered."""
        from .evaluation import Evaluator

        self._ensure_model()
        # the experiment's splits (disjoint from the collection's train prompts) replace the evaluator's own
        splits = {t: (self.splits[t]["test"], self.splits[t]["dev"]) for t in ecfg.tasks}
        res = Evaluator(ecfg, self.model, self.tokenizer, splits=splits).run()
        return {"wall_seconds": res["wall_seconds"], "units_computed": res["units_computed_this_run"], "methods": wanted,
                "heads": heads}

    # --- driver --------------------------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm.auto import tqdm

        t0 = time.time()
        self._prepare_run_dir()
        plan = [(s, kind, lv) for s in self.cfg.seeds for kind, lv in
                [("collect", lv) for lv in self.cfg.levels] + [("train", lv) for lv in self.cfg.levels] + [("eval", None)]]
        bar = tqdm(plan, desc="experiment", unit="stage", disable=not self.cfg.progress, position=0)
        for seed, kind, lv in bar:
            bar.set_postfix_str(f"seed {seed}: {kind}{'-' + lv if lv else ''}")
            if kind == "collect":
                self.collect_stage(seed, lv)
            elif kind == "train":
                self.train_stage(seed, lv)
            else:
                self.eval_stage(seed)
        bar.close()
        summary = aggregate(self.root, self.cfg, self.timings)
        summary["wall_s_this_invocation"] = round(time.time() - t0, 1)
        summary["stages_run"], summary["stages_skipped"] = self.stages_run, self.stages_skipped
        write_summary(self.root, summary, self.cfg)
        return summary


def _eval_covers(rec: dict, wanted: dict, heads: dict) -> bool:
    """Whether a finished eval stage ran every wanted method and head, with the options and weights wanted now."""
    # records written before methods left the fingerprint keep them in it
    old = rec["summary"].get("methods") or {k: rec["fingerprint"]["eval"].get(k) for k in wanted}
    old_heads = rec["summary"].get("heads") or rec["fingerprint"].get("heads") or {}
    return set(wanted["methods"]) <= set(old["methods"]) and all(
        (wanted["method_options"] or {}).get(m) == (old["method_options"] or {}).get(m) for m in wanted["methods"]
    ) and all(old_heads.get(lv) == h for lv, h in heads.items())


def _eval_normalize(old: dict, result_keys: set) -> dict:
    """An eval stage's fingerprint as recorded when the whole EvalConfig (and the heads) were in it, reduced to the
    result-changing keys the fingerprint holds now."""
    old = {k: v for k, v in old.items() if k != "heads"}
    return {**old, "eval": {k: v for k, v in old.get("eval", {}).items() if k in result_keys}}


def run_experiment(cfg: ExperimentConfig, model=None, tokenizer=None) -> dict:
    """Run or resume the experiment; returns the aggregated summary (also in run_dir/summary.json / summary.md)."""
    return Experiment(cfg, model, tokenizer).run()


# ------------------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ------------------------------------------------------------------------------------------------------------
def load_seed_results(root: Path, seeds: list[int]) -> dict:
    out = {}
    for s in seeds:
        path = Path(root) / f"seed-{s}" / "eval" / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: seed {s} has not been evaluated")
        out[s] = json.loads(path.read_text())
    return out


def per_prompt_rewards(results_by_seed: dict) -> tuple[dict, dict]:
    """({task: {method: {prompt_id: [reward per seed]}}}, {method: description}) from the test units."""
    table: dict = {}
    methods: dict = {}
    for res in results_by_seed.values():
        methods.update(res["methods"])
        for u in res["units"]:
            if u["split"] != "test":
                continue
            table.setdefault(u["task"], {}).setdefault(u["method"], {}).setdefault(u["prompt_id"], []).append(u["reward"])
    return table, methods


def _mean_rewards(by_prompt: dict, prompt_ids: list) -> list[float]:
    return [sum(by_prompt[p]) / len(by_prompt[p]) for p in prompt_ids]


def primary_method(cfg: ExperimentConfig) -> str:
    """The head the bar is about: ADseq (as in the paper's headline), ADtok when only that head is trained."""
    return LEVEL_METHOD["sequence" if "sequence" in cfg.levels else cfg.levels[0]]


def aggregate(root, cfg: ExperimentConfig, timings: dict | None = None) -> dict:
    """Summary over seeds: per-task and overall (pooled, raw) mean rewards with CIs, paired comparisons vs each fixed
    temperature, the scale-free report (`adaptive_decoder.scalefree`: normalized rewards, win rates), chosen-parameter
    distributions, the oracle's choices, training diagnostics and the bar verdict (`bar`: the primary head's;
    `bars`: every head's)."""
    from .scalefree import check_bar, units_report
    from .stats import bootstrap_mean_ci, finite_mean

    root = Path(root)
    results = load_seed_results(root, cfg.seeds)
    table, methods = per_prompt_rewards(results)
    tasks = [t for t in cfg.tasks if t in table]
    nb = cfg.n_bootstrap
    summary = {"seeds": list(cfg.seeds), "model": cfg.model, "methods": methods, "tasks": {}, "comparisons": [],
               "per_seed": {}, "timings": dict(timings or {})}
    method_names = list(methods)
    fixed = [m for m in method_names if role_of(methods[m]) == "fixed"]
    others = [m for m in method_names if m not in fixed]
    # an AD head is also paired with the oracle and the random controls: does it beat choosing without learning?
    controls = [m for m in ("oracle", "random", "random_token") if m in method_names]
    baselines = {m: fixed + (controls if role_of(methods[m]) == "adaptive" else []) for m in others}
    pooled = {m: [] for m in method_names}
    for t in tasks:
        ids = sorted(set.intersection(*(set(table[t][m]) for m in method_names)))
        rewards = {m: _mean_rewards(table[t][m], ids) for m in method_names}
        for m in method_names:
            pooled[m].extend(rewards[m])
        summary["tasks"][t] = {"num_test": len(ids), "methods": {m: {"reward": bootstrap_mean_ci(rewards[m], nb, seed=0)}
                                                                 for m in method_names}}
        summary["comparisons"] += compare_with_baselines(t, rewards, baselines, methods, nb, seed=0)
    summary["tasks"][OVERALL] = {"num_test": len(pooled[method_names[0]]),
                                 "methods": {m: {"reward": bootstrap_mean_ci(pooled[m], nb, seed=0)} for m in method_names}}
    summary["comparisons"] += compare_with_baselines(OVERALL, pooled, baselines, methods, nb, seed=0)
    # per seed: overall mean of each method (seed-to-seed spread) and the oracle's choice per task
    for s, res in results.items():
        ps = {"overall": {}, "oracle_choice": {}}
        for m in method_names:
            vals = [u["reward"] for u in res["units"] if u["split"] == "test" and u["method"] == m]
            ps["overall"][m] = sum(vals) / len(vals) if vals else None
        for t, tr in res["tasks"].items():
            fits = tr.get("oracle", {})
            if "oracle" in fits:  # the temperature oracle; the other dev-fitted methods under their own names
                ps["oracle_choice"][t] = fits["oracle"]["chosen"]
            for name, o in fits.items():
                if name != "oracle":
                    ps.setdefault("fitted_choice", {}).setdefault(t, {})[name] = o["chosen"]
        summary["per_seed"][str(s)] = ps
    # what the adaptive methods (and HAG) chose, per task, over every test sample of every seed
    chooser = [m for m in method_names if role_of(methods[m]) not in FIXED_CONFIG_ROLES]
    for t in tasks:
        units = [u for res in results.values() for u in res["units"] if u["split"] == "test" and u["task"] == t]
        for m in chooser:
            summary["tasks"][t]["methods"][m].update(choices([u for u in units if u["method"] == m]))
        for m in method_names:  # task metrics averaged over seeds (accuracy, chrF, coverage, diversity, ...)
            per_seed = [res["tasks"][t]["methods"][m]["metrics"] for res in results.values() if t in res["tasks"]]
            keys = sorted({k for d in per_seed for k, v in d.items() if isinstance(v, (int, float))})
            summary["tasks"][t]["methods"][m]["metrics"] = {
                k: finite_mean([d.get(k) for d in per_seed]) for k in keys}
    summary["training"] = _training_diagnostics(root, cfg)
    summary["scale_free"] = units_report([u for res in results.values() for u in res["units"]], tasks, fixed, method_names,
                                         n_boot=nb, seed=0)
    summary["bars"] = {LEVEL_METHOD[lv]: check_bar(summary["scale_free"], LEVEL_METHOD[lv]) for lv in cfg.levels}
    summary["bar"] = summary["bars"][primary_method(cfg)]
    summary["same_decoding"] = same_decoding(methods)
    return summary


def _training_diagnostics(root: Path, cfg: ExperimentConfig) -> dict:
    """Per seed and level: pairs per task, ties, final LPO accuracy / margin, the trained head's bin histogram."""
    out = {}
    for s in cfg.seeds:
        for lv in cfg.levels:
            d = {}
            cdone = root / f"seed-{s}" / f"collect-{lv}" / DONE
            tdone = root / f"seed-{s}" / f"train-{lv}" / DONE
            if cdone.is_file():
                c = json.loads(cdone.read_text())
                d["collect_wall_s"] = c["wall_s"]
                d["samples"] = c["summary"].get("samples_collected")
                d["pairs"] = c["summary"].get("pairs")
            if tdone.is_file():
                t = json.loads(tdone.read_text())
                d["train_wall_s"] = t["wall_s"]
                fl = t["summary"].get("final_logs") or {}
                d["final"] = {k: fl.get(k) for k in ("step", "loss", "rewards/accuracies", "rewards/margins", "entropy")
                              if k in fl}
                d["bin_histograms"] = t["summary"].get("bin_histograms")
            out[f"seed-{s}/{lv}"] = d
    return out


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
def write_summary(root, summary: dict, cfg: ExperimentConfig) -> None:
    """The plots (their paths go into the summary), summary.json, then summary.md (`adaptive_decoder.report`)."""
    root = Path(root)
    summary["plots"] = summary_plots(summary, root) if cfg.plots else []
    atomic_write_bytes(root / "summary.json", json.dumps(_jsonable(summary), indent=1).encode())
    atomic_write_bytes(root / "summary.md", summary_markdown(summary, cfg).encode())


__all__ = ["ExperimentConfig", "Experiment", "TaskReward", "aggregate", "difference_rows", "make_splits",
           "plot_paired_differences", "primary_method", "run_experiment", "prompt_group", "same_decoding", "save_tiny_model",
           "split_examples", "splits_digest", "summary_markdown", "verdict_block"]
