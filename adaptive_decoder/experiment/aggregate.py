"""Aggregation over seeds: the seeds' units through the one aggregator (`adaptive_decoder.evaluation.aggregate`:
per method x task rewards with bootstrap CIs over prompts, each prompt averaged over seeds, paired comparisons, the
scale-free report), the bar of each trained head, the learned value distributions, per-seed choices and training
diagnostics; `summary.json`, and what `evaluation.report` renders from it (summary.md, plots)."""

from __future__ import annotations

import json
import logging
from pathlib import Path


from ..methods.base import FIXED_CONFIG_ROLES, role_of
from ..evaluation.report import summary_markdown, summary_plots
from ..evaluation.aggregate import aggregate_units, with_seed_uncertainty
from ..evaluation.results import LEVEL_METHOD, OVERALL, MethodTaskResult, choices, same_decoding
from ..evaluation.scalefree import check_bar
from ..storage import atomic_write_bytes, jsonable
from .config import ExperimentConfig
from .stages import DONE

logger = logging.getLogger(__name__)


def load_seed_results(root: Path, seeds: list[int]) -> dict:
    out = {}
    for s in seeds:
        path = Path(root) / f"seed-{s}" / "eval" / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: seed {s} has not been evaluated")
        out[s] = json.loads(path.read_text())
    return out


def in_every_seed(results_by_seed: dict) -> tuple[dict, dict]:
    """The seeds' results restricted to the methods every seed evaluated, and {left-out method: its seeds}.

    A method evaluated on some seeds only (a token head added to seed 0 alone) would otherwise be averaged over fewer
    seeds than the methods it is compared with, and would restrict every comparison to the prompts it has."""
    have = {s: set(res["methods"]) for s, res in results_by_seed.items()}
    common = set.intersection(*have.values())
    left_out = {m: [s for s, ms in have.items() if m in ms] for m in sorted(set.union(*have.values()) - common)}
    if not left_out:
        return results_by_seed, {}
    logger.warning("method(s) %s were not evaluated on every seed (%s); the summary leaves them out (give every seed "
                   "the same levels and methods to compare them)", sorted(left_out), left_out)
    kept = {}
    for s, res in results_by_seed.items():
        tasks = {t: {**tr, "methods": {m: v for m, v in tr.get("methods", {}).items() if m in common}}
                 for t, tr in res["tasks"].items()}
        kept[s] = {**res, "methods": {m: v for m, v in res["methods"].items() if m in common}, "tasks": tasks,
                   "units": [u for u in res["units"] if u["method"] in common]}
    return kept, left_out


def primary_method(cfg: ExperimentConfig) -> str:
    """The head the bar is about: ADseq (as in the paper's headline), ADtok when only that head is trained."""
    return LEVEL_METHOD["sequence" if "sequence" in cfg.levels else cfg.levels[0]]


def aggregate(root, cfg: ExperimentConfig, timings: dict | None = None) -> dict:
    """Summary over seeds: the statistics of every seed's units (`adaptive_decoder.evaluation.aggregate`, the one
    aggregator the suite uses for one seed: per-task and overall (pooled, raw) mean rewards with CIs, paired
    comparisons, the scale-free report), chosen-parameter distributions, the oracle's choices, training diagnostics
    and the bar verdict (`bar`: the primary head's; `bars`: every trained head's). It also records what the markdown
    renders (`max_new_tokens`), so `evaluation.report` reads the summary alone."""
    from ..stats import finite_mean

    root = Path(root)
    results, left_out = in_every_seed(load_seed_results(root, cfg.seeds))
    methods: dict = {}
    for res in results.values():
        methods.update(res["methods"])
    all_units = [u for res in results.values() for u in res["units"]]
    stats = aggregate_units(all_units, methods, list(cfg.tasks), cfg.n_bootstrap, seed=0)
    tasks = list(stats["tasks"])
    # the dtype that ran (`dtype: auto` resolves by machine) and the backend that sampled: a result's conditions
    summary = {"seeds": list(cfg.seeds), "model": cfg.model, "dtype": cfg.dtype, "backend": cfg.backend,
               "max_new_tokens": cfg.max_new_tokens, "methods": methods,
               "tasks": {t: {"num_test": stats["tasks"][t]["num_test"], "methods": {}} for t in tasks},
               "comparisons": stats["comparisons"], "per_seed": {}, "timings": dict(timings or {}),
               "methods_left_out": left_out}
    summary["tasks"][OVERALL] = {"num_test": stats[OVERALL]["num_test"],
                                 "methods": {m: MethodTaskResult(reward=ci).to_dict()
                                             for m, ci in stats[OVERALL]["rewards"].items()}}
    # per seed: overall mean of each method (seed-to-seed spread) and the oracle's choice per task
    for s, res in results.items():
        ps = {"overall": {}, "oracle_choice": {}}
        for m in methods:
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
    chooser = [m for m in methods if role_of(methods[m]) not in FIXED_CONFIG_ROLES]
    for t in tasks:
        units = [u for u in all_units if u["split"] == "test" and u["task"] == t]
        records = summary["tasks"][t]["methods"]
        for m in methods:  # task metrics averaged over seeds (accuracy, chrF, coverage, diversity, ...)
            per_seed = [res["tasks"][t]["methods"][m]["metrics"] for res in results.values() if t in res["tasks"]]
            keys = sorted({k for d in per_seed for k, v in d.items() if isinstance(v, (int, float))})
            chose = choices([u for u in units if u["method"] == m]) if m in chooser else {}
            records[m] = MethodTaskResult(reward=stats["tasks"][t]["rewards"][m],
                                          metrics={k: finite_mean([d.get(k) for d in per_seed]) for k in keys},
                                          **chose).to_dict()
    summary["training"] = _training_diagnostics(root, cfg)
    summary["scale_free"] = stats["scale_free"]
    # every trained level's head: one evaluated on some seeds only was left out above, and is reported unevaluated
    by_seed = {s: res["units"] for s, res in results.items()}
    summary["bars"] = {LEVEL_METHOD[lv]: with_seed_uncertainty(check_bar(summary["scale_free"], LEVEL_METHOD[lv]), by_seed,
                                                                summary["scale_free"], cfg.n_bootstrap)
                       for lv in cfg.levels}
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
                # the pairs training used: a collection reused from another run (reuse_from) reported its pairs
                # under that run's pairing
                d["pairs"] = t["summary"].get("pair_stats") or d.get("pairs")
            out[f"seed-{s}/{lv}"] = d
    return out


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
def write_summary(root, summary: dict, cfg: ExperimentConfig) -> None:
    """The plots (their paths go into the summary), summary.json, then summary.md (`adaptive_decoder.evaluation.report`)."""
    root = Path(root)
    summary["plots"] = summary_plots(summary, root) if cfg.plots else []
    atomic_write_bytes(root / "summary.json", json.dumps(jsonable(summary), indent=1).encode())
    atomic_write_bytes(root / "summary.md", summary_markdown(summary).encode())
