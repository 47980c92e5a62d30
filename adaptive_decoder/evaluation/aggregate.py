"""One aggregator of evaluation units, for one seed (the suite's results.json) or many (the experiment's
summary.json): per task and method the mean reward with its bootstrap CI, the paired comparisons of every method
with its comparison set, the scale-free report and each learned head's bar.

A prompt's reward is the mean of its test units over seeds (one seed: its unit's reward). Per task, the rewards are
aligned on the test prompts every method has, in sorted prompt-id order, so the statistics do not depend on the
order in which units were logged or seeds listed, and each paired statistic pairs the same prompts. `overall` pools
the aligned per-prompt rewards of every task on their raw scales (the scale-free report weights tasks equally
instead). The dev units only normalize the scale-free report (`adaptive_decoder.evaluation.scalefree`).

Who is compared with whom is defined once, in `comparison_set`.
"""

from __future__ import annotations

from ..methods.base import controls, role_of
from ..stats import bootstrap_mean_ci, two_level_bootstrap
from .results import OVERALL, compare_with_baselines
from .scalefree import check_bar, rewards_by_prompt, units_report

def fixed_settings(methods: dict) -> list[str]:
    """The fixed-grid settings among `methods` ({name: description}), in their order."""
    return [m for m, d in methods.items() if role_of(d) == "fixed"]


def learned_heads(methods: dict) -> list[str]:
    """The trained heads among `methods` (ADseq, ADtok, ...), in their order."""
    return [m for m, d in methods.items() if role_of(d) == "adaptive"]


def comparison_set(methods: dict) -> dict[str, list[str]]:
    """{method: the methods it is paired with}: every method that is not a fixed setting against each fixed setting
    (the bar's baselines); a learned head also against the controls among `methods` (does it beat choosing without
    learning?); the controls are the methods registered with `is_control` (`methods.base.controls`)."""
    fixed, ctrl = fixed_settings(methods), controls(list(methods))
    return {m: fixed + (ctrl if role_of(d) == "adaptive" else []) for m, d in methods.items() if m not in fixed}


def aggregate_units(units: list, methods: dict, tasks: list, n_boot: int, seed: int) -> dict:
    """The statistics of `units` (test and dev units of one seed or many) for `methods` ({name: description}, the
    report's order) on `tasks` (those without test units are left out):
    {"tasks": {task: {"num_test", "rewards": {method: ci}}}, OVERALL: {"num_test", "rewards"}, "comparisons",
     and, when some method is a fixed setting, "scale_free" and "bars": {head: check_bar}}."""
    test = rewards_by_prompt(units, "test")
    tasks = [t for t in tasks if t in test]
    names = list(methods)
    baselines = comparison_set(methods)
    out: dict = {"tasks": {}, "comparisons": []}
    pooled: dict = {m: [] for m in names}
    for t in tasks:
        ids = sorted(set.intersection(*(set(test[t].get(m, {})) for m in names)))
        rewards = {m: [test[t][m][p] for p in ids] for m in names}
        for m in names:
            pooled[m].extend(rewards[m])
        out["tasks"][t] = {"num_test": len(ids), "rewards": {m: bootstrap_mean_ci(rewards[m], n_boot, seed=seed)
                                                             for m in names}}
        out["comparisons"] += compare_with_baselines(t, rewards, baselines, methods, n_boot, seed)
    out[OVERALL] = {"num_test": len(pooled[names[0]]) if names else 0,
                    "rewards": {m: bootstrap_mean_ci(pooled[m], n_boot, seed=seed) for m in names}}
    out["comparisons"] += compare_with_baselines(OVERALL, pooled, baselines, methods, n_boot, seed)
    fixed, heads = fixed_settings(methods), learned_heads(methods)
    if fixed:  # normalized rewards and win rates need the fixed grid
        out["scale_free"] = units_report(units, tasks, fixed, names, n_boot=n_boot, seed=seed, head_to_head=heads)
        out["bars"] = {h: check_bar(out["scale_free"], h) for h in heads}
    return out


def seed_differences(units_by_seed: dict, method: str, baseline: str, scale_free: dict) -> dict:
    """{training seed: {task: per-prompt normalized difference method - baseline}}, the input of
    `stats.two_level_bootstrap`: per seed and task of `scale_free` (a `units_report`), on the test prompts of that
    seed where both methods have a unit, (reward of method - reward of baseline) / the task's normalization scale
    (its zero cancels in a difference)."""
    per_seed = {}
    for s, units in units_by_seed.items():
        test = rewards_by_prompt(units, "test")
        per_seed[str(s)] = {}
        for t, norm in scale_free["tasks"].items():
            by_m = test.get(t, {})
            ids = sorted(set(by_m.get(method, {})) & set(by_m.get(baseline, {})))
            per_seed[str(s)][t] = [(by_m[method][p] - by_m[baseline][p]) / norm["normalization"]["scale"] for p in ids]
    return per_seed


def with_seed_uncertainty(bar: dict, units_by_seed: dict, scale_free: dict, n_boot: int) -> dict:
    """`bar` (`check_bar`'s, over seed-averaged prompts) with its difference's interval from a two-level bootstrap
    over training seeds and, within each, prompts within task (`stats.two_level_bootstrap`), so a seed whose head
    decides otherwise widens it; `met` is re-read with that interval. `units_by_seed`: {training seed: its units}.
    Kept beside it: "diff_ci_prompts" (the prompt-level interval) and "per_seed": {seed: that seed's normalized
    difference}, the per-seed verdicts. With one seed the bar is returned as it is."""
    if not bar.get("evaluated") or len(units_by_seed) < 2:
        return bar
    per_seed = seed_differences(units_by_seed, bar["method"], bar["baseline"], scale_free)
    two = two_level_bootstrap(per_seed, n_boot=n_boot, seed=0)
    beats = two["lo"] > 0
    return {**bar, "diff_ci": [two["lo"], two["hi"]], "diff_ci_prompts": bar["diff_ci"], "per_seed": two["per_seed"],
            "ci_levels": "training seeds, then prompts within task", "beats_best_fixed": bool(beats),
            "met": bool(beats and bar["wins_vs_every_fixed"])}


__all__ = ["aggregate_units", "seed_differences", "with_seed_uncertainty", "comparison_set", "fixed_settings", "learned_heads"]
