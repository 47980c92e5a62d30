"""Aggregation over seeds: per method x task rewards with bootstrap CIs over prompts (each prompt averaged over
seeds), paired comparisons with every fixed temperature, the scale-free report and the bar, the learned value
distributions; `summary.json`, and what `evaluation.report` renders from it (summary.md, plots)."""

from __future__ import annotations

import json
import logging
from pathlib import Path


from ..methods.base import FIXED_CONFIG_ROLES, controls as control_methods, role_of
from ..evaluation.report import summary_markdown, summary_plots
from ..evaluation.results import LEVEL_METHOD, OVERALL, MethodTaskResult, choices, compare_with_baselines, same_decoding
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
    temperature, the scale-free report (`adaptive_decoder.evaluation.scalefree`: normalized rewards, win rates), chosen-parameter
    distributions, the oracle's choices, training diagnostics and the bar verdict (`bar`: the primary head's;
    `bars`: every head's)."""
    from ..evaluation.scalefree import check_bar, units_report
    from ..stats import bootstrap_mean_ci, finite_mean

    root = Path(root)
    results, left_out = in_every_seed(load_seed_results(root, cfg.seeds))
    table, methods = per_prompt_rewards(results)
    tasks = [t for t in cfg.tasks if t in table]
    nb = cfg.n_bootstrap
    summary = {"seeds": list(cfg.seeds), "model": cfg.model, "methods": methods, "tasks": {}, "comparisons": [],
               "per_seed": {}, "timings": dict(timings or {}), "methods_left_out": left_out}
    method_names = list(methods)
    fixed = [m for m in method_names if role_of(methods[m]) == "fixed"]
    others = [m for m in method_names if m not in fixed]
    # an AD head is also paired with the oracle and the random controls: does it beat choosing without learning?
    controls = control_methods(method_names)
    baselines = {m: fixed + (controls if role_of(methods[m]) == "adaptive" else []) for m in others}
    pooled = {m: [] for m in method_names}
    reward_ci = {}  # task -> method -> mean reward with its CI; the records are built once choices and metrics are in
    for t in tasks:
        ids = sorted(set.intersection(*(set(table[t][m]) for m in method_names)))
        rewards = {m: _mean_rewards(table[t][m], ids) for m in method_names}
        for m in method_names:
            pooled[m].extend(rewards[m])
        reward_ci[t] = {m: bootstrap_mean_ci(rewards[m], nb, seed=0) for m in method_names}
        summary["tasks"][t] = {"num_test": len(ids), "methods": {}}
        summary["comparisons"] += compare_with_baselines(t, rewards, baselines, methods, nb, seed=0)
    summary["tasks"][OVERALL] = {"num_test": len(pooled[method_names[0]]),
                                 "methods": {m: MethodTaskResult(reward=bootstrap_mean_ci(pooled[m], nb, seed=0)).to_dict()
                                             for m in method_names}}
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
        records = summary["tasks"][t]["methods"]
        for m in method_names:  # task metrics averaged over seeds (accuracy, chrF, coverage, diversity, ...)
            per_seed = [res["tasks"][t]["methods"][m]["metrics"] for res in results.values() if t in res["tasks"]]
            keys = sorted({k for d in per_seed for k, v in d.items() if isinstance(v, (int, float))})
            chose = choices([u for u in units if u["method"] == m]) if m in chooser else {}
            records[m] = MethodTaskResult(reward=reward_ci[t][m], metrics={k: finite_mean([d.get(k) for d in per_seed])
                                                                      for k in keys}, **chose).to_dict()
    summary["training"] = _training_diagnostics(root, cfg)
    heads = [m for m in method_names if role_of(methods[m]) == "adaptive"]
    summary["scale_free"] = units_report([u for res in results.values() for u in res["units"]], tasks, fixed, method_names,
                                         n_boot=nb, seed=0, head_to_head=heads)
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
    atomic_write_bytes(root / "summary.md", summary_markdown(summary, cfg).encode())
