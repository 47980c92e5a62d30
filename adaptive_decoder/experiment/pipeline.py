"""The reproduction experiment: collect -> LPO-train ADseq / ADtok -> evaluate against every baseline -> aggregate.

One call, `run_experiment(ExperimentConfig(...))`, drives the whole pipeline on top of the other library modules:

    splits       per task, a deterministic split of the task's examples into disjoint train / dev / test prompts
                 (shuffled with `split_seed`; test first, then dev, then train; a prompt text never appears in two
                 splits). The same splits serve every seed, so seeds vary only the sampling and the head init.
    for each seed:
      collect-<level>  LPO samples on the TRAIN prompts with a freshly initialised head exploring
                       (`adaptive_decoder.lpo.collection.collect`, rewards = the evaluation rewards of each task;
                       drawn by HF generate or, with `backend: vllm`, a vLLM engine, as the eval stage's)
      train-<level>    LPO on best-vs-worst pairs of that collection (`adaptive_decoder.lpo.trainer.LPOTrainer`),
                       starting from (and referencing) the collecting head
      eval             greedy, the fixed-temperature grid, random, the per-task oracle (fitted on DEV prompts),
                       the trained heads (ADseq / ADtok) and optionally HAG on the TEST prompts
                       (`adaptive_decoder.evaluation.harness.Evaluator`)
    aggregate    the suite's aggregator over every seed's units (`adaptive_decoder.evaluation.aggregate`): per
                 method x task, mean reward with a 95% bootstrap CI over prompts (each prompt's reward averaged
                 over seeds), paired win rates / mean differences with p-values vs each method's comparison set
                 (every fixed temperature; a head also the oracle and the random controls); per-task normalized
                 rewards and win rates, their equally weighted means over tasks and the verdict on the bar
                 (`adaptive_decoder.evaluation.scalefree`); the learned temperature / top-p / top-k distributions
                 per task; `summary.json`, and the plots and `summary.md` that `adaptive_decoder.evaluation.report`
                 renders from it.

Each stage runs on its typed config, `ExperimentConfig.stage_config(kind, seed, level)`: the `collect` / `lpo` /
`eval` options of the experiment under the values it sets itself (`adaptive_decoder.experiment.stage_configs`).

Resume: each stage directory gets a `stage_done.json` (its settings fingerprint, summary and wall time) written
atomically when the stage finishes; a rerun skips finished stages, and an unfinished stage is resumed by the
library it calls (collection manifest, LPO checkpoints, evaluation unit log). A finished stage whose settings
changed is refused (use a new run_dir) rather than silently mixed: every planned stage that finished (and every
reuse_from stage to copy) is checked before the run writes anything, and experiment_config.json, which describes the
run, is written only once a stage finishes under its settings (or the summary is written), so a refused or failed
start leaves it as it was. The base LM is loaded only if a stage runs.
An ablation of training starts from another run's samples with `reuse_from` (its finished collections and the
evaluation units of methods without a trained head are copied first; `adaptive_decoder.experiment.reuse`).

Everything lives under `run_dir`:
    experiment_config.json, splits.json
    seed-<s>/collect-<level>/  (collection + collect_head/)   seed-<s>/train-<level>/head/   seed-<s>/eval/
    summary.md, summary.json, reward_vs_temperature.png, learned_params.png, paired_differences.png
"""


from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path


from ..modeling.head_digest import head_fingerprint
from ..storage import atomic_write_bytes, jsonable
from ..tasks.base import TaskReward
from ..tasks.identity import task_digest
from .config import ExperimentConfig
from .splits import split_examples, splits_digest
from .stage_configs import head_path, option, stage_dir
from .stages import mark_done, stage_done
from .aggregate import aggregate, write_summary

logger = logging.getLogger(__name__)


class Experiment:
    """Runs (or resumes) the stages of an `ExperimentConfig`. `model`/`tokenizer` may be given (tests, notebooks);
    otherwise the base LM is loaded on first need."""

    def __init__(self, cfg: ExperimentConfig, model=None, tokenizer=None):
        self.cfg = cfg
        self.root = Path(cfg.run_dir)
        self.model, self.tokenizer = model, tokenizer
        if model is not None:
            from ..modeling.loading import check_model_load
            from ..modeling.models import check_model_dtype

            check_model_dtype(model, cfg.dtype)
            check_model_load(model, cfg.load_identity())
        self.tasks = {t: cfg.build_task(t) for t in cfg.tasks}
        self.splits = {}
        for t, task in self.tasks.items():
            n = cfg.split_sizes(t)
            self.splits[t] = split_examples(task.examples(), n["num_test"], n["num_dev"], n["num_train"], cfg.split_seed, t)
        self.timings: dict = {}
        self.stages_run: list[str] = []
        self.stages_skipped: list[str] = []
        self._eval_fingerprints: dict[int, dict] = {}
        self._config_recorded = False

    # --- setup ---------------------------------------------------------------------------------------------
    def _splits_record(self) -> dict:
        """What splits.json is to hold: the recorded splits with this run's tasks added; refused if a task's splits
        changed."""
        digest = splits_digest(self.splits)
        path = self.root / "splits.json"
        if not path.exists():
            return digest
        old = json.loads(path.read_text())
        changed = sorted(t for t in set(old) & set(digest) if old[t] != digest[t])
        if changed:
            raise ValueError(f"{self.root} was started with other train/dev/test splits for task(s) {changed} "
                             "(task data, split sizes or split_seed changed); use a new run_dir")
        return {**old, **digest}

    def _check_resume(self) -> tuple[dict, list]:
        """Every refusal that the records on disk decide, made before this invocation writes anything: the splits,
        each planned stage that finished (its stage_done.json against this run's settings, in the order the stages
        run) and, with reuse_from, each source stage to copy. Returns splits.json's content and the copies to make.

        So a refused rerun leaves the run directory as it was, and a seed added in the same rerun is not run under
        settings that another seed's finished stage refuses."""
        splits = self._splits_record()
        for seed in self.cfg.seeds:
            for lv in self.cfg.levels:
                stage_done(stage_dir(self.root, seed, "collect", lv), self._collect_fingerprint(seed, lv))
            for lv in self.cfg.levels:
                stage_done(stage_dir(self.root, seed, "train", lv), self._train_fingerprint(seed, lv))
            stage_done(stage_dir(self.root, seed, "eval"), self._eval_fingerprint(seed))
        return splits, self._reuse_plan(Path(self.cfg.reuse_from)) if self.cfg.reuse_from else []

    def _record_config(self):
        """Write experiment_config.json, the settings the run's stages finished with (the model card, `compare` and
        users read it): once per invocation, when its first stage finishes (before that stage's record, so no
        finished stage lacks it), when stages were copied from reuse_from, and before the summary (aggregated under
        these settings). A start that is refused, or fails before a stage finishes, leaves the one that was there."""
        if not self._config_recorded:
            atomic_write_bytes(self.root / "experiment_config.json",
                               json.dumps(jsonable(asdict(self.cfg)), indent=1).encode())
            self._config_recorded = True

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
        return head_path(self.root, seed, level)

    def _train_prompts(self) -> list[dict]:
        return [{**ex, "id": f"{t}/{ex['id']}", "task": t} for t, parts in self.splits.items() for ex in parts["train"]]

    def _run_stage(self, name: str, stage_dir: Path, fingerprint: dict, fn, covers=None):
        """Run `fn` unless the stage finished with this fingerprint (and, if given, `covers(record)` holds)."""
        rec = stage_done(stage_dir, fingerprint)
        if rec is not None and (covers is None or covers(rec)):
            logger.info("stage %s: already done (%.1f s), skipping", name, rec["wall_s"])
            self.stages_skipped.append(name)
            self.timings[name] = rec["wall_s"]
            return rec
        stage_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        summary = fn()
        self._record_config()
        # a stage extended after it finished (a method added to an evaluation) reports its whole compute time
        rec = mark_done(stage_dir, fingerprint, summary, time.time() - t0 + (rec["wall_s"] if rec else 0.0))
        self.stages_run.append(name)
        self.timings[name] = rec["wall_s"]
        return rec

    # --- stages --------------------------------------------------------------------------------------------
    def _collect_fingerprint(self, seed, level) -> dict:
        cfg = self.cfg
        # vllm_options only size the engine (as in the eval stage's fingerprint and the collection's identity)
        collect = {k: v for k, v in cfg.collect.items() if k != "vllm_options"}
        return {"model": cfg.model, "dtype": cfg.dtype, "chat": cfg.chat, "head": cfg.head, "level": level, "seed": seed,
                "collect": collect, "max_new_tokens": cfg.max_new_tokens,
                "train_ids": {t: [e["id"] for e in p["train"]] for t, p in self.splits.items()},
                "rewards": {t: self.tasks[t].reward_spec for t in self.tasks},
                "task_contents": {t: task_digest(task) for t, task in self.tasks.items()},
                "stop_when_scored": cfg.stop_when_scored, "backend": cfg.backend, "load": cfg.load_identity()}

    def collect_stage(self, seed: int, level: str) -> dict:
        out = stage_dir(self.root, seed, "collect", level)
        return self._run_stage(f"seed-{seed}/collect-{level}", out, self._collect_fingerprint(seed, level),
                               partial(self._collect, seed, level, out))

    def _collect(self, seed: int, level: str, out: Path) -> dict:
        """The collect stage's work: LPO samples on the train prompts, explored by the seed's collecting head (made
        and saved on first need), and the pair statistics of the collection."""
        from ..lpo.collection import collect, group_size_mismatches, sampling_model
        from ..modeling.head import build_head
        from ..lpo.pairs import collection_pair_report

        cfg = self.cfg
        self._ensure_model()
        head_dir = out / "collect_head"
        saved = (head_dir / "model.safetensors").exists()
        head = build_head({"selection": "sample", **cfg.head, "level": level}, seed, model=self.model,
                          head_path=head_dir if saved else None, model_name=cfg.model)
        if not saved:
            head.save_pretrained(head_dir)
        settings = cfg.stage_config("collect", seed, level)
        rewards = {t: TaskReward(task, self.model, self.tokenizer) for t, task in self.tasks.items()}
        for line in group_size_mismatches(rewards, settings, int(option(cfg, "eval", "num_samples")), level):
            logger.warning(line)
        specs = {t: {"reward": task.reward_spec, "task_options": cfg.task_options(t)} for t, task in self.tasks.items()}
        for t, spec in specs.items():  # a task's own generation length, as the evaluation uses it
            if spec["task_options"].get("max_new_tokens"):
                spec["max_new_tokens"] = int(spec["task_options"]["max_new_tokens"])
        with sampling_model(self.model, self.tokenizer, head.to(self.model.device), settings) as adm:
            summary = collect(adm, self._train_prompts(), rewards, out, settings, task_specs=specs, progress=cfg.progress)
        summary["pairs"] = collection_pair_report(out, mode=option(cfg, "lpo", "pair_mode"), k=option(cfg, "lpo", "pair_k"),
                                                  eps=option(cfg, "lpo", "pair_eps"))
        return summary

    def _train_fingerprint(self, seed, level) -> dict:
        return {"collect": self._collect_fingerprint(seed, level), "lpo": self.cfg.lpo}

    def train_stage(self, seed: int, level: str) -> dict:
        out = stage_dir(self.root, seed, "train", level)
        return self._run_stage(f"seed-{seed}/train-{level}", out, self._train_fingerprint(seed, level),
                               partial(self._train, seed, level))

    def _train(self, seed: int, level: str) -> dict:
        """The train stage's work: LPO on the pairs of the seed's collection, from (and against) its collecting head."""
        from ..lpo.data import MemoizedDataset, build_head_and_dataset
        from ..lpo.trainer import LPOTrainer

        lcfg = self.cfg.stage_config("train", seed, level)
        head, dataset = build_head_and_dataset(lcfg)
        if getattr(dataset, "stats", {}).get("samples_recomputed"):
            dataset = MemoizedDataset(dataset)  # recompute uncached head inputs once, not once per epoch
        trainer = LPOTrainer(lcfg, head, dataset)
        summary = trainer.train()
        summary["pair_stats"] = getattr(dataset, "stats", None)
        summary["final_logs"] = trainer.history[-1] if trainer.history else None
        return summary

    def eval_config(self, seed: int):
        return self.cfg.stage_config("eval", seed)

    def _eval_fingerprint(self, seed: int) -> dict:
        # the settings that change results (not paths, threads, progress bars). Methods, their options and the
        # heads are left out: adding one (e.g. --hag_model_path, or a token level, after the run) reruns the stage,
        # and the Evaluator computes only the new units (it refuses changed options of methods that have units
        # and changed weights of a head that has units). Kept per seed: it builds every task to digest it.
        if seed not in self._eval_fingerprints:
            self._eval_fingerprints[seed] = {
                "eval": jsonable(self.eval_config(seed).fingerprint()),
                "splits": splits_digest({t: {s: p[s] for s in ("test", "dev")} for t, p in self.splits.items()})}
        return self._eval_fingerprints[seed]

    def eval_stage(self, seed: int) -> dict:
        out = stage_dir(self.root, seed, "eval")
        ecfg = self.eval_config(seed)
        fp = self._eval_fingerprint(seed)
        wanted = jsonable({"methods": list(ecfg.methods), "method_options": ecfg.method_options})
        heads = {lv: head_fingerprint(self.head_path(seed, lv)) for lv in self.cfg.levels}
        return self._run_stage(f"seed-{seed}/eval", out, fp, partial(self._evaluate, ecfg, wanted, heads),
                               covers=partial(_eval_covers, wanted=wanted, heads=heads))

    def _reuse_plan(self, source: Path) -> list[tuple]:
        """The copies from `source` into this run, (kind, source stage, this run's stage, fingerprint) each, every
        source stage checked (see `adaptive_decoder.experiment.reuse`): its finished collections (unless
        reuse_collections is off) and the evaluation units of its methods without a trained head."""
        from .reuse import collection_to_copy, eval_units_to_copy

        if not (source / "experiment_config.json").is_file():
            raise FileNotFoundError(f"reuse_from: {source} is not an experiment run_dir (no experiment_config.json)")
        if source.resolve() == self.root.resolve():
            raise ValueError("reuse_from is this run's own run_dir; give the run to copy from")
        plan = []
        for seed in self.cfg.seeds:
            src, dst = source / f"seed-{seed}", self.seed_dir(seed)
            for lv in self.cfg.levels if self.cfg.reuse_collections else ():
                copy = ("collect", src / f"collect-{lv}", dst / f"collect-{lv}", self._collect_fingerprint(seed, lv))
                if collection_to_copy(*copy[1:]):
                    plan.append(copy)
            copy = ("eval", src / "eval", dst / "eval", self._eval_fingerprint(seed))
            if eval_units_to_copy(*copy[1:]):
                plan.append(copy)
        return plan

    def reuse_stages(self, plan: list[tuple]):
        """Make the copies of `_reuse_plan`."""
        from .reuse import copy_collection, copy_eval_units

        for kind, src, dst, fp in plan:
            if kind == "collect":
                copy_collection(src, dst, fp)
                logger.info("reuse_from: copied %s", src)
            else:
                n = copy_eval_units(src, dst, fp)
                if n:
                    logger.info("reuse_from: copied %d evaluation units of methods without a trained head from %s", n,
                                src)

    def _evaluate(self, ecfg, wanted: dict, heads: dict) -> dict:
        """The eval stage's work: the Evaluator on the experiment's test and dev prompts; the stage's summary records
        the methods (with their options) and the head weights it covered."""
        from ..evaluation.harness import Evaluator

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
        splits, reuse = self._check_resume()
        # splits.json is written before any stage runs, unlike the config: an unfinished collection's manifest does
        # not hold which prompts it was given, so this record is what refuses a rerun with other splits there
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.root / "splits.json", json.dumps(splits, indent=1).encode())
        if reuse:
            self.reuse_stages(reuse)
            self._record_config()
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
        self._record_config()
        write_summary(self.root, summary, self.cfg)
        return summary


def _eval_covers(rec: dict, wanted: dict, heads: dict) -> bool:
    """Whether a finished eval stage ran every wanted method and head, with the options and weights wanted now."""
    old, old_heads = rec["summary"]["methods"], rec["summary"]["heads"]
    return set(wanted["methods"]) <= set(old["methods"]) and all(
        (wanted["method_options"] or {}).get(m) == (old["method_options"] or {}).get(m) for m in wanted["methods"]
    ) and all(old_heads.get(lv) == h for lv, h in heads.items())


def run_experiment(cfg: ExperimentConfig, model=None, tokenizer=None) -> dict:
    """Run or resume the experiment; returns the aggregated summary (also in run_dir/summary.json / summary.md)."""
    return Experiment(cfg, model, tokenizer).run()
