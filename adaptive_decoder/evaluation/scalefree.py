"""Scale-free comparison of decoding methods across tasks, and the reproduction's bar.

Tasks score on different scales (accuracy in [0, 1], chrF, a reward model's logits, fluency in nats), so a mean
over all prompts of all tasks is dominated by whichever task has the widest scale. Two scale-free views fix that:

Normalized reward. Per task, every per-prompt reward r is mapped linearly to (r - zero) / (one - zero), where
`zero` and `one` are the mean rewards of the worst and of the best *fixed temperature* on that task's DEV prompts.
Dev, because the test prompts are what is being reported (the oracle chooses on dev for the same reason); the
fixed grid, because it is the baseline every method is compared with, so 0 and 1 mean "as good as the worst /
best single temperature for this task". Test values may therefore fall outside [0, 1]. Fallbacks, recorded as
the task's `source`: no dev results for the grid, or all grid means equal on dev -> the grid's TEST means
("test"); still all equal (or no grid at all) -> the raw rewards, zero 0 and scale 1 ("raw", i.e. that task is
left on its own scale). `overall` is the mean over tasks, each task weighted equally whatever its prompt count.

Win rate (the paper's). Per task and prompt, method M against fixed temperature F on the same prompt: 1 if M's
per-prompt reward is higher, 1/2 on a tie (|difference| <= `TIE_TOL`), 0 if lower; the task's win rate is the
mean over its prompts, `overall` the mean over tasks. A mapping with a positive scale keeps every sign, so win
rates are the same on raw and on normalized rewards.

Intervals. A paired, stratified percentile bootstrap: each resample draws the prompts of every task with
replacement, within that task (the prompt counts per task stay fixed), and recomputes every statistic of every
method on the SAME draw, so differences and win rates are paired; the overall value of a resample is the mean
of its task values. The draws come from `numpy.random.default_rng(seed)` in task order: same inputs and seed,
same intervals.

The bar (`check_bar`): a method (ADseq; ADtok is reported the same way) meets it when
  (1) its overall normalized reward minus that of the best single fixed temperature has a paired 95% interval
      above 0, where "best single" is ONE temperature for all tasks, the one with the highest overall normalized
      DEV reward (chosen on dev as the oracle is; on test only when some task has no dev results for the grid),
  (2) and its overall win rate against every fixed temperature is above 1/2 with the 95% interval above 1/2.

Inputs are plain dicts {task: {method: {prompt_id: reward}}} (`rewards_by_prompt` builds them from evaluation
units, averaging a prompt's reward over seeds); the outputs are JSON-able dicts, which `evaluation.report.scalefree`
renders (tables, the bar's rule and verdict line).
"""

from __future__ import annotations

import numpy as np

TIE_TOL = 1e-9



# ------------------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------------------
def rewards_by_prompt(units, split: str) -> dict:
    """{task: {method: {prompt_id: mean reward}}} over the `split` units (several seeds of a prompt: their mean)."""
    acc: dict = {}
    for u in units:
        if u["split"] == split:
            acc.setdefault(u["task"], {}).setdefault(u["method"], {}).setdefault(str(u["prompt_id"]), []).append(u["reward"])
    return {t: {m: {p: sum(v) / len(v) for p, v in by_p.items()} for m, by_p in ms.items()} for t, ms in acc.items()}


def _aligned(test: dict, methods: list) -> tuple[dict, dict]:
    """Per task: the prompt ids every method has, and each method's rewards on them as an array."""
    ids, arrays = {}, {}
    for t, by_m in test.items():
        missing = [m for m in methods if m not in by_m]
        if missing:
            raise ValueError(f"task {t!r} has no test results for method(s) {missing}")
        common = sorted(set.intersection(*(set(by_m[m]) for m in methods)))
        if not common:
            raise ValueError(f"task {t!r}: no test prompt has a result for every method")
        ids[t] = common
        arrays[t] = {m: np.array([by_m[m][p] for p in common], dtype=float) for m in methods}
    return ids, arrays


# ------------------------------------------------------------------------------------------------------------
# normalization
# ------------------------------------------------------------------------------------------------------------
def _grid_means(by_method: dict, fixed: list) -> dict:
    return {f: float(np.mean(list(by_method[f].values()))) for f in fixed if by_method.get(f)}


def task_normalization(dev_by_method: dict, test_by_method: dict, fixed: list) -> dict:
    """{"source", "zero", "scale", "worst", "best"} of one task (see the module docstring for the fallbacks);
    `worst` / `best` name the grid settings that define 0 and 1 (None for "raw")."""
    for source, by_m in (("dev", dev_by_method), ("test", test_by_method)):
        means = _grid_means(by_m or {}, fixed)
        if means:
            worst, best = min(means, key=means.get), max(means, key=means.get)
            if means[best] > means[worst]:
                return {"source": source, "zero": means[worst], "scale": means[best] - means[worst],
                        "worst": worst, "best": best}
    return {"source": "raw", "zero": 0.0, "scale": 1.0, "worst": None, "best": None}


def normalize(x, norm: dict):
    return (np.asarray(x, dtype=float) - norm["zero"]) / norm["scale"]


# ------------------------------------------------------------------------------------------------------------
# paired stratified bootstrap
# ------------------------------------------------------------------------------------------------------------
class _Draws:
    """One set of bootstrap draws per task, shared by every statistic (that is what makes them paired)."""

    def __init__(self, sizes: dict, n_boot: int, seed: int, alpha: float):
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        rng = np.random.default_rng(seed)
        self.idx = {t: rng.integers(0, n, size=(n_boot, n)) for t, n in sizes.items()}
        self.alpha = alpha

    def _interval(self, point: float, boot: np.ndarray) -> dict:
        lo, hi = np.quantile(boot, [self.alpha / 2, 1 - self.alpha / 2])
        return {"mean": float(point), "lo": float(lo), "hi": float(hi)}

    def summarize(self, per_prompt: dict) -> dict:
        """{"tasks": {task: interval}, "overall": interval} of per-prompt values {task: array}: task means and
        their equally weighted mean over tasks."""
        boots = {t: v[self.idx[t]].mean(axis=1) for t, v in per_prompt.items()}
        tasks = {t: self._interval(v.mean(), boots[t]) for t, v in per_prompt.items()}
        overall = self._interval(np.mean([v.mean() for v in per_prompt.values()]),
                                 np.mean(np.stack(list(boots.values())), axis=0))
        return {"tasks": tasks, "overall": overall}


def win_scores(a, b, tie_tol: float = TIE_TOL) -> np.ndarray:
    """Per prompt: 1 where a beats b, 1/2 on a tie, 0 where b beats a."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return np.where(d > tie_tol, 1.0, np.where(d < -tie_tol, 0.0, 0.5))


# ------------------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------------------
def _best_single_fixed(dev: dict, norms: dict, fixed: list, normalized: dict) -> dict:
    """The grid setting with the highest overall normalized reward on DEV (test if a task lacks dev results)."""
    on_dev = all(all(dev.get(t, {}).get(f) for f in fixed) for t in norms)
    if on_dev:
        scores = {f: float(np.mean([normalize(np.mean(list(dev[t][f].values())), norms[t]) for t in norms]))
                  for f in fixed}
    else:
        scores = {f: normalized[f]["overall"]["mean"] for f in fixed}
    best = max(fixed, key=lambda f: (scores[f], -fixed.index(f)))  # a tie goes to the earlier grid setting
    return {"name": best, "chosen_on": "dev" if on_dev else "test", "scores": scores}


def units_report(units: list, tasks, fixed: list, methods: list, n_boot: int = 2000, seed: int = 0,
                 head_to_head: list | None = None) -> dict:
    """`scale_free_report` of result units (`rewards_by_prompt` of their test and dev splits) on `tasks`."""
    test = rewards_by_prompt(units, "test")
    return scale_free_report({t: test[t] for t in tasks}, rewards_by_prompt(units, "dev"), fixed, methods, n_boot=n_boot,
                             seed=seed, head_to_head=head_to_head)


def scale_free_report(test: dict, dev: dict | None, fixed: list, methods: list | None = None, n_boot: int = 2000,
                      alpha: float = 0.05, seed: int = 0, head_to_head: list | None = None) -> dict:
    """Normalized rewards, win rates and normalized differences vs each fixed temperature, with paired intervals.

    `test` / `dev`: {task: {method: {prompt_id: reward}}} (dev needs only the fixed grid; None = no dev results).
    `fixed`: the fixed-temperature method names (the grid). `methods`: what to report (default: every method that
    every task has); the non-fixed ones are compared with each fixed temperature. `head_to_head`: methods (the
    learned heads) also compared with every other non-fixed method (oracle, min-p, MeanShift, HAG, ...): beating
    the grid is the bar, but a user who would tune min-p per task instead wants that difference too. Returns
    {"tasks": {task: {"n", "normalization"}}, "fixed", "methods",
     "normalized": {method: {"tasks": {task: iv}, "overall": iv}},
     "win_rates": {method: {fixed: {"tasks": {task: iv}, "overall": iv}}},
     "differences": {method: {fixed: {"tasks": {task: iv}, "overall": iv}}}   (normalized method - fixed),
     "head_to_head": {method: {other: {"difference": {"tasks", "overall"}, "win_rate": {"tasks", "overall"}}}},
     "best_fixed": {"name", "chosen_on", "scores"}, "n_boot", "alpha", "seed"}, iv = {"mean", "lo", "hi"}.
    """
    if not test:
        raise ValueError("no test results to report")
    dev = dev or {}
    if methods is None:
        methods = [m for m in next(iter(test.values())) if all(m in by_m for by_m in test.values())]
    fixed = [f for f in fixed if f in methods]
    if not fixed:
        raise ValueError("the scale-free report needs at least one fixed-temperature method among the methods")
    compared = [m for m in methods if m not in fixed]
    ids, raw = _aligned(test, methods)
    norms = {t: task_normalization(dev.get(t), test[t], fixed) for t in test}
    draws = _Draws({t: len(ids[t]) for t in test}, n_boot, seed, alpha)
    nz = {t: {m: normalize(raw[t][m], norms[t]) for m in methods} for t in test}
    normalized = {m: draws.summarize({t: nz[t][m] for t in test}) for m in methods}

    # every pairwise statistic on the same draws, so the head-to-head differences are paired with the bar's
    def win_rate(m, o):
        return draws.summarize({t: win_scores(raw[t][m], raw[t][o]) for t in test})

    def difference(m, o):
        return draws.summarize({t: nz[t][m] - nz[t][o] for t in test})

    win_rates = {m: {f: win_rate(m, f) for f in fixed} for m in compared}
    differences = {m: {f: difference(m, f) for f in fixed} for m in compared}
    unknown = [m for m in head_to_head or [] if m not in compared]
    if unknown:
        raise ValueError(f"head_to_head: {unknown} are not among the reported non-fixed methods {compared}")
    h2h = {m: {o: {"difference": difference(m, o), "win_rate": win_rate(m, o)} for o in compared if o != m}
           for m in head_to_head or []}
    return {"tasks": {t: {"n": len(ids[t]), "normalization": norms[t]} for t in test}, "fixed": fixed,
            "methods": list(methods), "normalized": normalized, "win_rates": win_rates, "differences": differences,
            "head_to_head": h2h, "best_fixed": _best_single_fixed(dev, norms, fixed, normalized), "n_boot": int(n_boot),
            "alpha": float(alpha), "seed": int(seed)}


# ------------------------------------------------------------------------------------------------------------
# the bar
# ------------------------------------------------------------------------------------------------------------
def check_bar(report: dict, method: str = "adseq") -> dict:
    """The bar (module docstring) for `method`:
    {"method", "evaluated", "comparison", "baseline", "baseline_chosen_on", "method_normalized",
     "baseline_normalized", "diff", "diff_ci": [lo, hi], "win_rates": {fixed: {"mean", "ci": [lo, hi]}},
     "beats_best_fixed", "wins_vs_every_fixed", "met"}; {"method", "evaluated": False, "met": False} if absent."""
    if method not in report.get("win_rates", {}):
        return {"method": method, "evaluated": False, "met": False}
    best = report["best_fixed"]["name"]
    d = report["differences"][method][best]["overall"]
    wins = {f: {"mean": w["overall"]["mean"], "ci": [w["overall"]["lo"], w["overall"]["hi"]]}
            for f, w in report["win_rates"][method].items()}
    beats = d["lo"] > 0
    wins_all = all(w["mean"] > 0.5 and w["ci"][0] > 0.5 for w in wins.values())
    return {"method": method, "evaluated": True,
            "comparison": f"{method} - {best}: overall normalized reward (tasks weighted equally), {best} being the "
                          f"best single fixed temperature on {report['best_fixed']['chosen_on']}",
            "baseline": best, "baseline_chosen_on": report["best_fixed"]["chosen_on"],
            "method_normalized": report["normalized"][method]["overall"]["mean"],
            "baseline_normalized": report["normalized"][best]["overall"]["mean"],
            "diff": d["mean"], "diff_ci": [d["lo"], d["hi"]], "win_rates": wins,
            "beats_best_fixed": bool(beats), "wins_vs_every_fixed": bool(wins_all), "met": bool(beats and wins_all)}


def strongest_rival(report: dict, method: str, skip=()) -> dict | None:
    """The baseline with the highest overall normalized reward among the non-fixed methods (the other learned heads
    left out: they are not what a user would pick instead), with `method`'s paired difference and win rate against
    it: {"name", "normalized", "difference", "win_rate"} (intervals), or None when there is none to compare."""
    h2h = report.get("head_to_head", {})
    by_o = {o: v for o, v in h2h.get(method, {}).items() if o not in skip and o not in h2h}
    if not by_o:
        return None
    best = max(by_o, key=lambda o: report["normalized"][o]["overall"]["mean"])
    return {"name": best, "normalized": report["normalized"][best]["overall"]["mean"],
            "difference": by_o[best]["difference"]["overall"], "win_rate": by_o[best]["win_rate"]["overall"]}


__all__ = ["TIE_TOL", "check_bar", "normalize", "rewards_by_prompt", "scale_free_report", "strongest_rival",
           "task_normalization", "units_report", "win_scores"]
