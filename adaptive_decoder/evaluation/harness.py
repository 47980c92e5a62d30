"""Evaluation harness: every decoding method on every task, resumable, with statistics; `adaptive_decoder.evaluation.report`
renders the tables, plots and wandb run from the results it writes.

Work is split into *units* (method, task, split, prompt). Each finished unit (its k samples, the values the
policy applied, every metric) is appended to `<output_dir>/units.jsonl` as soon as its generate batch finishes,
so a killed run loses at most the batch in flight; a restart skips finished units and never recomputes them.
One run at a time per output_dir: a second process is refused (`adaptive_decoder.storage.lock_dir`, the lock the
sample collection uses) instead of computing and appending every unit a second time.

Seeding: batches are fixed chunks of each task's prompt list and batch b of (task, split) is generated with the
seed crc32(f"{seed}:{task}:{split}:{b}") for EVERY method, so methods see the same token randomness (paired
comparisons with common random numbers) and a unit's samples do not depend on which methods run.

Oracle: each fixed-grid candidate runs on a held-out dev split of the task (disjoint from the test prompts); the
best mean dev reward picks the setting, which then decodes the test prompts.
Reuse: two methods with the same fixed config (greedy and T=0.0; the oracle and the grid setting it chose) would
produce identical samples (same config, prompts and seeds), so the second copies the first one's units
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
from ..configs import changed_keys
from ..modeling.head_digest import head_fingerprint
from ..methods.policies import (MIX_SAMPLERS, SAMPLER_GRIDS, AdaptivePolicy, FixedPolicy, MeanShiftPolicy, MixSamplerPolicy,
                                OraclePolicy)
from ..methods.base import build_policies
from .report import log_wandb, markdown_table, results_plots
from .aggregate import aggregate_units
from .results import MethodTaskResult, choices
from .scalefree import normalize, task_normalization
from ..stats import finite_mean
from ..storage import lock_dir
from ..tasks.recipe import build_task
from .config import EVAL_KEYS, HEAD_METHODS, EvalConfig, task_fingerprint
from .units import UnitStore, _build_unit, batch_seed

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
            n_dev = cfg.num_dev_prompts if self.oracles else 0
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
            opts = dict(cfg.method_options.get(m) or {})
            if m in ("fixed", "oracle"):
                opts = {**grid, **opts}
            if m in SAMPLER_GRIDS or m in MIX_SAMPLERS:  # equal tuning budget: as many candidates as the grid has
                opts = {**opts, "budget": len(cfg.temperatures)}
            if m in MIX_SAMPLERS:  # normalized like the report: on the fixed grid's dev rewards
                opts = {**grid, **opts}
            if m in HEAD_METHODS:
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
                for c in [*getattr(p, "candidates", []), *getattr(p, "anchors", [])]:  # these run on the dev split
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
    def oracles(self) -> list:
        return [p for p in self.policies if isinstance(p, OraclePolicy)]

    def _head_policies(self) -> list:
        """Every AdaptivePolicy that runs: the methods' own and MeanShift's (on dev)."""
        return [p for p in self.policies if isinstance(p, AdaptivePolicy)] + [
            c for o in self.oracles for c in o.candidates if isinstance(c, AdaptivePolicy)]

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
        for p in self._head_policies():  # a head for another base model is refused before any generation
            p._bound(self.adm)
        if self.cfg.backend == "vllm":  # one engine for every method; the HF model still encodes, scores, recomputes
            from ..integrations.vllm.backend import VLLMDecodingModel, VLLMEngine

            opts = {"max_num_seqs": self.cfg.batch_size * self.cfg.num_samples, **self.cfg.vllm_options}
            self.engine = VLLMEngine(self.model, self.tokenizer, **opts)
            self.adm = VLLMDecodingModel(self.model, self.tokenizer, engine=self.engine)

    def _check_resume(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.out_dir / "run_config.json"
        fp = json.loads(json.dumps(self.cfg.fingerprint()))
        heads = {p.name: head_fingerprint(p.head_path) for p in self._head_policies() if p.head_path}
        opts = json.loads(json.dumps({m: self.cfg.method_options.get(m) for m in self.cfg.methods}))
        self.store = UnitStore(self.out_dir / "units.jsonl")
        if cfg_file.exists():
            old = json.loads(cfg_file.read_text())
            old_heads = old.pop("heads", {})
            old["task_options"] = task_fingerprint(old.get("task_options") or {})
            # options per method; a file written before they were kept that way has them all in one field
            old_opts = old.pop("methods", None)
            if old_opts is None:
                old_opts = dict(old.pop("method_options", None) or {})
            diff = changed_keys(old, fp)
            diff += [f"weights of head {n!r}" for n in sorted(set(heads) & set(old_heads)) if heads[n] != old_heads[n]]
            # a method's options matter only where it has finished units: a new method (or one whose units were
            # deleted) may come with any options
            has_units = {m for name, _, split, _ in self.store.units for m in self._methods_of.get((name, split), ())}
            diff += [f"method_options of {m!r}" for m in sorted(has_units) if opts[m] != old_opts.get(m)]
            if diff:
                raise ValueError(f"{self.out_dir} holds units of a run with a different config ({', '.join(diff)} differ); "
                                 "finished units would not match. Use another output_dir or delete that directory.")
            heads, opts = {**old_heads, **heads}, {**old_opts, **opts}
        cfg_file.write_text(json.dumps({**fp, "heads": heads, "methods": opts}, indent=2))

    # --- running --------------------------------------------------------------------------------------------
    def _plan(self) -> list:
        """(policy, task, split, examples) jobs in execution order; oracle dev candidates come first per task,
        and the candidates of a pooled fit (MeanShift: one fit over all tasks) before every test job."""
        pooled = [o for o in self.oracles if getattr(o, "pooled", False)]
        jobs = [(c, tname, "dev", self.splits[tname][1]) for tname in self.cfg.tasks for o in pooled
                for c in [*o.candidates, *getattr(o, "anchors", [])]]
        for tname in self.cfg.tasks:
            test, dev = self.splits[tname]
            seen = set()
            for o in self.oracles:
                if o in pooled:
                    continue
                for c in o.candidates:
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
        with lock_dir(self.out_dir, "evaluation output directory"):
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
                if isinstance(policy, OraclePolicy):
                    self._fit_oracle(policy, tname)
                self._run_job(policy, self.tasks[tname], split, examples, bar)
        finally:
            bar.close()

    def _dev_scores(self, oracle: OraclePolicy, tname: str) -> dict:
        _, dev = self.splits[tname]
        return {c.name: finite_mean([self.store.get(c.name, tname, "dev", e["id"])["reward"] for e in dev])
                for c in oracle.candidates}

    def _fit_oracle(self, oracle: OraclePolicy, tname: str):
        if isinstance(oracle, MeanShiftPolicy):  # pooled: the same fit for every task
            oracle.fit_units([self.store.get(c.name, t, "dev", e["id"]) for t in self.cfg.tasks
                              for c in oracle.candidates for e in self.splits[t][1]])
        elif isinstance(oracle, MixSamplerPolicy):  # pooled too, on the normalized dev rewards of every task
            oracle.fit_mix({t: {c.name: {e["id"]: self.store.get(c.name, t, "dev", e["id"])["reward"]
                                         for e in self.splits[t][1]} for c in [*oracle.candidates, *oracle.anchors]}
                            for t in self.cfg.tasks}, mix_normalizer)
        else:
            oracle.fit(self._dev_scores(oracle, tname))

    def _reusable(self, policy, task, split, todo):
        """A policy already run here with the same fixed config (greedy == T=0.0, oracle == its chosen setting, two
        dev-fitted methods that chose the same setting): same config, prompts and batch seeds give the same samples
        by construction, so its units are copied."""
        target = policy.chosen if isinstance(policy, OraclePolicy) else policy
        if not isinstance(target, FixedPolicy):
            return None
        pool = self.policies + [c for o in self.oracles for c in o.candidates]
        for q in pool:
            if q.name == policy.name or not all(self.store.done(q.name, task.name, split, e["id"]) for e in todo):
                continue
            if isinstance(q, OraclePolicy):  # another dev-fitted method that chose the same config on this task
                self._fit_oracle(q, task.name)  # (min_p_mix and min_p often do); refitted before its own jobs anyway
                decoded = q.chosen
            else:
                decoded = q if q.role in ("fixed", "greedy") else None
            if isinstance(decoded, FixedPolicy) and decoded.config == target.config:
                return q
        return None

    def _run_job(self, policy, task, split, examples, bar):
        cfg = self.cfg
        for b in range(0, len(examples), cfg.batch_size):
            chunk = examples[b:b + cfg.batch_size]
            todo = [e for e in chunk if not self.store.done(policy.name, task.name, split, e["id"])]
            if not todo:
                continue
            bi = b // cfg.batch_size
            seed = batch_seed(cfg.seed, task.name, split, bi)
            reuse = self._reusable(policy, task, split, todo)
            if reuse is not None:
                units = []
                for e in todo:
                    u = dict(self.store.get(reuse.name, task.name, split, e["id"]))
                    u["method"] = policy.name
                    u["extra"] = {**u.get("extra", {}), "reused_from": reuse.name}
                    if isinstance(policy, OraclePolicy):
                        u["extra"]["oracle_choice"] = policy.chosen.name
                    units.append(u)
            else:
                bar.set_postfix_str(f"{task.name}/{split}/{policy.name}")
                start = time.time()
                stop = task.stop_predicate() if cfg.stop_when_scored else None
                try:
                    outs = policy.generate(self.adm, [e["prompt"] for e in todo], num_samples=cfg.num_samples,
                                           max_new_tokens=task.max_new_tokens or cfg.max_new_tokens, seed=seed, chat=cfg.chat,
                                           **({"stop_when": stop} if stop else {}))  # a plug-in policy may predate it
                except ValueError as e:
                    if cfg.backend == "hf":
                        raise
                    # e.g. a method whose generate needs HF's loop (stopping criteria): say which one, on which backend
                    raise ValueError(f"method {policy.name!r} cannot run on backend {cfg.backend!r}: {e}") from e
                secs = (time.time() - start) / len(todo)
                units = [_build_unit(policy.name, task, split, e, o, bi, seed, secs) for e, o in zip(todo, outs)]
            self.store.add(units)
            bar.update(len(todo))

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
                if isinstance(p, OraclePolicy):
                    self._fit_oracle(p, tname)
                    tres.setdefault("oracle", {})[p.name] = p.fit_summary()
                test_units[tname, p.name] = [self.store.get(p.name, tname, "test", e["id"]) for e in test]
                res["units"].extend(test_units[tname, p.name])
            res["tasks"][tname] = tres
        dev_names = list(dict.fromkeys(c.name for o in self.oracles for c in [*o.candidates, *getattr(o, "anchors", [])]))
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
    fixed grid, on that task's dev prompts), for `MixSamplerPolicy.fit_mix`."""
    norm = task_normalization(by_name, None, anchors)
    return lambda x: normalize(x, norm)
