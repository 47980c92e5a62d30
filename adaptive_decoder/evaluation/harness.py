"""Evaluation harness: every decoding method on every task, resumable, with statistics; `adaptive_decoder.evaluation.report`
renders the tables, plots and wandb run from the results it writes.

Work is split into *units* (method, task, split, prompt). Each finished unit (its k samples, the values the
policy applied, every metric) is appended to `<output_dir>/units.jsonl` as soon as its generate batch finishes,
so a killed run loses at most the batch in flight; a restart skips finished units and never recomputes them.
One run at a time per output_dir: a second process is refused (`adaptive_decoder.storage.RunRecord.lock`, the lock the
sample collection uses) instead of computing and appending every unit a second time.

Seeding (`adaptive_decoder.scoring`): a prompt's j-th sample draws from the row seed of (seed, task, prompt id, j)
for EVERY method, so methods see the same token randomness (paired comparisons with common random numbers), and a
unit's samples do not depend on which methods run, on its batch or on what a resume skips.

Methods are read through their traits (`adaptive_decoder.methods.base.MethodTraits` and the policy's class
traits), never by name or class: the run options a method declares come from this config, the trained heads go
to the methods that take heads, and a dev-fitted policy (`needs_dev`; the oracle, the tuned samplers, MeanShift,
or one registered elsewhere) has its `dev_policies()` run on a held-out dev split of each task (disjoint from the
test prompts) before `fit(DevResults)` picks the config that decodes the test prompts; a pooled fit's dev units of
every task come before any test job.
Reuse: two policies with the same `fixed_config()` (greedy and T=0.0; the oracle and the grid setting it chose)
would produce identical samples (same config, prompts and seeds), so the second copies the first one's units
(marked extra.reused_from) instead of recomputing them.

Outputs in `output_dir`: units.jsonl (resume log), results.json (config, every sample with its applied values
and chosen bins, per-method metrics, and the one aggregator's statistics (`adaptive_decoder.evaluation.aggregate`:
paired comparisons with each method's comparison set, the scale-free report of `adaptive_decoder.evaluation.scalefree`:
normalized rewards, win rates and the bar for each head)), results.md (tables; a win rate is never shown without
its CI), reward_vs_temperature.png, chosen_params.png, and an offline wandb run (tables + images).
"""


from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from ..hag import policy as _hag_methods  # noqa: F401  (registers the methods "hag" and "hag_untrained")
from ..modeling.head_digest import head_fingerprint
from ..methods.base import build_policies, method_traits
from ..methods.fitted import DevResults
from .report import log_wandb, markdown_table, results_plots
from .aggregate import aggregate_units
from .results import MethodTaskResult, choices
from .scalefree import normalize, task_normalization
from ..stats import finite_mean
from ..scoring import ScoredSampling
from ..storage import RunRecord, jsonable
from ..tasks.identity import changes_by_task
from ..tasks.recipe import build_task
from .config import EVAL_KEYS, RUN_CONFIG, EvalConfig
from .units import UnitStore, _build_unit

logger = logging.getLogger(__name__)


def eval_tasks(cfg: EvalConfig) -> dict:
    """{name: Task} of an evaluation, each built from its `tasks` entry (`adaptive_decoder.tasks.recipe`)."""
    return {t: build_task(t, o, EVAL_KEYS, on_bad_line=cfg.on_bad_line) for t, o in cfg.tasks.items()}


class Evaluator:
    """Runs the units of a config against a model; `run()` returns the aggregated results dict."""

    def __init__(self, cfg: EvalConfig, model=None, tokenizer=None, splits: dict | None = None):
        """`splits` ({task: (test_examples, dev_examples)}) replaces the tasks' own subset/seed split, e.g. to keep
        evaluation prompts disjoint from the prompts a head was trained on."""
        self.cfg = cfg
        self.out_dir = Path(cfg.output_dir)
        self.policies = self._build_policies()  # before loading the model: bad methods fail fast
        self.tasks = eval_tasks(cfg)
        if splits is not None and set(splits) != set(self.tasks):
            raise ValueError(f"splits must cover exactly the configured tasks {sorted(self.tasks)}, got {sorted(splits)}")
        self.splits = {}
        for name, task in self.tasks.items():
            if splits is not None:  # matched by id onto this task's own records (the caller may hold copies)
                by_id = {e["id"]: e for e in task.examples()}
                test, dev = splits[name]
                missing = [e["id"] for e in (*test, *dev) if e["id"] not in by_id]
                if missing:
                    raise ValueError(f"task {name!r}: split examples {missing[:5]} are not among the task's examples")
                self.splits[name] = ([by_id[e["id"]] for e in test], [by_id[e["id"]] for e in dev])
                continue
            n_dev = cfg.num_dev_prompts if self.fitted else 0
            self.splits[name] = task.split(cfg.task_prompts(name), n_dev, cfg.seed)
        self.model, self.tokenizer = model, tokenizer
        self.adm = None
        self.engine = None  # backend 'vllm': the VLLMEngine of this run, closed when its units are done

    # --- setup ----------------------------------------------------------------------------------------------
    def _build_policies(self) -> list:
        cfg, out = self.cfg, []
        self._methods_of: dict[tuple, set] = {}
        self.skipped_heads: list[str] = []
        grid = dict(temperatures=cfg.temperatures, top_p=cfg.fixed_top_p, top_k=cfg.fixed_top_k)
        for m in cfg.methods:
            traits = method_traits(m)
            # the grid is a default that method_options may replace; the budget is not: every tuned method gets as
            # many candidates as the grid it is compared with has
            opts = {**{k: v for k, v in grid.items() if k in traits.run_options}, **(cfg.method_options.get(m) or {})}
            if "budget" in traits.run_options:
                opts["budget"] = len(cfg.temperatures)
            if traits.takes_heads:
                paths = list(cfg.head_paths) + ([opts.pop("head_path")] if "head_path" in opts else [])
                missing = [p for p in paths if not Path(p).exists()]
                if missing and cfg.skip_missing_heads:
                    logger.warning("skipping head(s), directory not found: %s (skip_missing_heads=True)", missing)
                    self.skipped_heads += missing
                    paths = [p for p in paths if p not in missing]
                    if not paths:
                        continue
                elif missing:
                    raise FileNotFoundError(f"head_paths: directory not found: {', '.join(missing)} (a head is a "
                                            "directory saved by AdaptiveDecoderHead.save_pretrained; `make demo` "
                                            "writes runs/control/seed-0/train-sequence/head); set skip_missing_heads "
                                            "to drop missing ones")
                opts = {"head_paths": paths, "strict_base_model": cfg.strict_base_model, "model_name": cfg.model, **opts}
            built = build_policies(m, **opts)
            for p in built:  # (unit name, split) -> the method whose options produced it
                self._methods_of.setdefault((p.name, "test"), set()).add(m)
                for c in p.dev_policies():
                    self._methods_of.setdefault((c.name, "dev"), set()).add(m)
            out.extend(built)
        names = [p.name for p in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two methods share the name(s) {dup}; give one of them a name= in method_options")
        if not out:
            raise ValueError("no method left to run (every adaptive head was missing?)")
        return out

    @property
    def fitted(self) -> list:
        """The dev-fitted policies."""
        return [p for p in self.policies if p.needs_dev]

    def _load_model(self):
        from ..modeling.generation import AdaptiveDecodingModel
        from ..modeling.loading import check_model_load
        from ..modeling.models import check_model_dtype

        self.cfg.set_threads()
        if self.model is None:
            self.model, self.tokenizer = self.cfg.load()
        else:
            check_model_dtype(self.model, self.cfg.dtype)
            check_model_load(self.model, self.cfg.load_identity())
        self.adm = AdaptiveDecodingModel(self.model, self.tokenizer)
        for p in self.policies:  # a head for another base model is refused before any generation
            p.check_model(self.adm)
        if self.cfg.backend == "vllm":  # one engine for every method; the HF model still encodes, scores, recomputes
            from ..integrations.vllm.backend import VLLMDecodingModel, VLLMEngine

            opts = {"max_num_seqs": self.cfg.batch_size * self.cfg.num_samples, **self.cfg.vllm_options}
            self.engine = VLLMEngine(self.model, self.tokenizer, **opts)
            self.adm = VLLMDecodingModel(self.model, self.tokenizer, engine=self.engine)

    def _check_resume(self):
        record = RunRecord(self.out_dir, RUN_CONFIG)
        fp = self.cfg.fingerprint()
        heads = {n: head_fingerprint(path) for p in self.policies for n, path in p.heads().items()}
        opts = jsonable({m: self.cfg.method_options.get(m) for m in self.cfg.methods})
        self.store = UnitStore(self.out_dir / "units.jsonl")
        old = record.read()
        if old is not None:
            diff = changes_by_task(record, fp, old)  # a task added since only adds units
            fp = {**fp, "task_contents": {**(old["task_contents"] or {}), **fp["task_contents"]}}
            diff += [f"weights of head {n!r}" for n in sorted(set(heads) & set(old["heads"])) if heads[n] != old["heads"][n]]
            # a method's options matter only where it has finished units: a new method (or one whose units were
            # deleted) may come with any options
            has_units = {m for name, _, split, _ in self.store.units for m in self._methods_of.get((name, split), ())}
            diff += [f"method_options of {m!r}" for m in sorted(has_units) if opts[m] != old["methods"].get(m)]
            if diff:
                raise ValueError(f"{self.out_dir} holds units of a run with a different config ({', '.join(diff)} differ); "
                                 "finished units would not match. Use another output_dir or delete that directory.")
            heads, opts = {**old["heads"], **heads}, {**old["methods"], **opts}
        record.write(fp, heads=heads, methods=opts)

    # --- running --------------------------------------------------------------------------------------------
    def _plan(self) -> list:
        """(policy, task, split, examples) jobs in execution order; a per-task fit's dev policies come first per task,
        and the dev policies of a pooled fit (MeanShift: one fit over all tasks) before every test job."""
        pooled = [o for o in self.fitted if o.pooled]
        jobs = [(c, tname, "dev", self.splits[tname][1]) for tname in self.cfg.tasks for o in pooled
                for c in o.dev_policies()]
        for tname in self.cfg.tasks:
            test, dev = self.splits[tname]
            seen = set()
            for o in self.fitted:
                if o in pooled:
                    continue
                for c in o.dev_policies():
                    if c.name not in seen:
                        seen.add(c.name)
                        jobs.append((c, tname, "dev", dev))
            for p in self.policies:
                jobs.append((p, tname, "test", test))
        # one job per unit name, at its first place: a pooled fit's anchors are the oracle's candidates too
        first = {}
        for j in jobs:
            first.setdefault((j[0].name, j[1], j[2]), j)
        return list(first.values())

    def _todo(self, policy, tname, split, examples) -> int:
        return sum(not self.store.done(policy.name, tname, split, e["id"]) for e in examples)

    def run(self) -> dict:
        t0 = time.time()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # one run per output_dir: a second one would compute and append every unit again (and both would
        # rewrite run_config.json and the results); the lock is held from the resume check to the last output
        with RunRecord(self.out_dir, RUN_CONFIG).lock():
            return self._run(t0)

    def _run(self, t0: float) -> dict:
        self._check_resume()
        jobs = self._plan()
        total = sum(self._todo(*j) for j in jobs)
        done_before = len(self.store.units)
        if total == 0:
            logger.info("all units already finished in %s; aggregating", self.out_dir)
        else:
            try:
                self._sample(jobs, total)
            finally:
                if self.engine is not None:  # backend 'vllm': its engine (and its worker process) ends with the sampling
                    self.engine.close()
                    self.engine = None
        results = self.aggregate(time.time() - t0, units_computed=len(self.store.units) - done_before)
        write_outputs(results, self.out_dir, self.cfg)
        return results

    def _sample(self, jobs: list, total: int):
        self._load_model()
        scorer = (self.model, self.tokenizer) if self.cfg.fluency else (None, None)
        for t in self.tasks.values():
            t.setup_scoring(*scorer)
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="eval units", unit="prompt", disable=not self.cfg.progress, dynamic_ncols=True)
        try:
            for policy, tname, split, examples in jobs:
                if policy.needs_dev:
                    self._fit(policy, tname)
                self._run_job(policy, self.tasks[tname], split, examples, bar)
        finally:
            bar.close()

    def _fit(self, policy, tname: str):
        """Fit a dev-fitted policy for task `tname` on the dev units in the store (a pooled fit reads every task)."""
        def units(name, t):
            return [self.store.get(name, t, "dev", e["id"]) for e in self.splits[t][1]]

        policy.fit(DevResults(task=tname, tasks=list(self.cfg.tasks), units=units, normalizer=mix_normalizer))

    def _reusable(self, policy, task, split, todo):
        """A policy already run here with the same fixed config (greedy == T=0.0, oracle == its chosen setting, two
        dev-fitted methods that chose the same setting): same config, prompts and prompt seeds give the same samples
        by construction, so its units are copied."""
        target = policy.fixed_config()
        if target is None:
            return None
        pool = self.policies + [c for o in self.fitted for c in o.dev_policies()]
        for q in pool:
            if q.name == policy.name or not all(self.store.done(q.name, task.name, split, e["id"]) for e in todo):
                continue
            if q.needs_dev:  # another dev-fitted method that chose the same config on this task
                self._fit(q, task.name)  # (min_p_mix and min_p often do); refitted before its own jobs anyway
            if q.fixed_config() == target:
                return q
        return None

    def _run_job(self, policy, task, split, examples, bar):
        """A policy's units on one task and split, through the scored-sampling engine: a prompt's seed (and so its
        samples) depends on (seed, task, prompt id) only, the same for every method and whatever its batch."""
        cfg = self.cfg

        def draw(todo, seeds):
            reuse = self._reusable(policy, task, split, todo)
            if reuse is not None:
                units = []
                for e in todo:
                    u = dict(self.store.get(reuse.name, task.name, split, e["id"]))
                    u["method"] = policy.name
                    u["extra"] = {**u.get("extra", {}), "reused_from": reuse.name, **policy.output_extra()}
                    units.append(u)
                return units
            bar.set_postfix_str(f"{task.name}/{split}/{policy.name}")
            start = time.time()
            stop = task.stop_predicate() if cfg.stop_when_scored else None
            try:
                outs = policy.generate(self.adm, [e["prompt"] for e in todo], num_samples=cfg.num_samples,
                                       max_new_tokens=task.max_new_tokens or cfg.max_new_tokens, seed=seeds, chat=cfg.chat,
                                       **({"stop_when": stop} if stop else {}))  # a plug-in policy may predate it
            except ValueError as e:
                if cfg.backend == "hf":
                    raise
                # e.g. a method whose generate needs HF's loop (stopping criteria): say which one, on which backend
                raise ValueError(f"method {policy.name!r} cannot run on backend {cfg.backend!r}: {e}") from e
            secs = (time.time() - start) / len(todo)
            return [_build_unit(policy.name, task, split, e, o, s, secs) for e, o, s in zip(todo, outs, seeds)]

        def append(todo, units):
            self.store.add(units)
            bar.update(len(todo))

        done = {e["id"] for e in examples if self.store.done(policy.name, task.name, split, e["id"])}
        # backend 'vllm': a whole job per engine call by default (vLLM refills its batch as rows end; a killed run
        # loses that job's units), or the engine's prompts_per_call (bench/vllm_suite.py measures both)
        size = cfg.batch_size if self.engine is None else self.engine.prompts_per_call or max(1, len(examples))
        ScoredSampling(cfg.seed, size, task_of=lambda e: task.name).run(examples, draw=draw, append=append, done=done)

    # --- aggregation ----------------------------------------------------------------------------------------
    def aggregate(self, wall_seconds: float, units_computed: int = 0) -> dict:
        """results.json's dict: the dev-fitted methods' fits, each method's record per task, and the statistics of
        the one aggregator (`evaluation.aggregate.aggregate_units`, the experiment's over several seeds)."""
        cfg = self.cfg
        res = {"config": asdict(cfg), "wall_seconds": wall_seconds, "units_computed_this_run": units_computed,
               "skipped_heads": list(getattr(self, "skipped_heads", [])),
               "methods": {p.name: p.describe() for p in self.policies}, "tasks": {}, "comparisons": [], "units": []}
        test_units = {}
        for tname, task in self.tasks.items():
            test, dev = self.splits[tname]
            tres = {"source": task.source, "num_test": len(test), "num_dev": len(dev), "reward": task.reward_spec,
                "max_new_tokens": task.max_new_tokens or cfg.max_new_tokens, "methods": {}}
            for p in self.policies:
                if p.needs_dev:
                    self._fit(p, tname)
                    tres.setdefault("oracle", {})[p.name] = p.fit_summary()
                test_units[tname, p.name] = [self.store.get(p.name, tname, "test", e["id"]) for e in test]
                res["units"].extend(test_units[tname, p.name])
            res["tasks"][tname] = tres
        dev_names = list(dict.fromkeys(c.name for o in self.fitted for c in o.dev_policies()))
        for tname in self.cfg.tasks:
            res["units"].extend(self.store.get(n, tname, "dev", e["id"]) for n in dev_names
                                for e in self.splits[tname][1] if self.store.done(n, tname, "dev", e["id"]))
        stats = aggregate_units(res["units"], res["methods"], list(self.tasks), cfg.n_bootstrap, cfg.seed)
        for (tname, name), units in test_units.items():
            res["tasks"][tname]["methods"][name] = MethodTaskResult(
                reward=stats["tasks"][tname]["rewards"][name], metrics=self.tasks[tname].summarize(units),
                mean_new_tokens=finite_mean([s["num_tokens"] for u in units for s in u["samples"]]),
                gen_seconds_per_prompt=finite_mean([u.get("gen_seconds", 0.0) for u in units]),
                **choices(units)).to_dict()
        res["comparisons"] = stats["comparisons"]
        if "scale_free" in stats:
            res["scale_free"], res["bar"] = stats["scale_free"], stats["bars"]
        return res


def run_evaluation(cfg: EvalConfig, model=None, tokenizer=None) -> dict:
    """Run (or resume) an evaluation; returns the results dict also written to `cfg.output_dir`/results.json."""
    return Evaluator(cfg, model, tokenizer).run()


def write_outputs(results: dict, out_dir: Path, cfg: EvalConfig):
    """results.json, then what `adaptive_decoder.evaluation.report` renders from it: results.md, the plots, the wandb run."""
    out_dir = Path(out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    (out_dir / "results.md").write_text(markdown_table(results))
    images = results_plots(results, out_dir) if cfg.plots else []
    if cfg.report_to == "wandb":
        log_wandb(results, cfg, images)


def mix_normalizer(by_name: dict, anchors: list):
    """A task's map of a raw dev mean onto the scale-free report's scale (0 / 1 = the worst / best of `anchors`, the
    fixed grid, on that task's dev prompts), the `DevResults.normalizer` of every fit."""
    norm = task_normalization(by_name, None, anchors)
    return lambda x: normalize(x, norm)
