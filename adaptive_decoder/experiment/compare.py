"""Run B's head against run A's on the same test prompts: the paired, normalized difference B - A per task and
overall, with the interval the bar uses.

Each run's bar compares its head with the fixed grid. Whether the head of an ablation of training (`reuse_from`:
the expected-reward objective instead of LPO, another pairing or beta) is at least as good as the head of the run
it copied from is another question, and a paired one: both heads were evaluated on the same prompts, with the same
seeds and the same baseline units. `compare_runs(run_a, run_b, method)` answers it with the bar's own machinery.

Pairing. Per seed and task, the two runs' units of `method` on the same test prompts. Two rewards of one prompt
pair only when both were earned under the same rules, so the runs must agree on: their seeds; per seed, the
evaluation settings in `PAIRING_KEYS` (results.json's config: the seed, samples per prompt, generation length, the
model, the fixed grid, the task options); the tasks and, per task, the settings in `TASK_KEYS` (its reward, its
generation length); the test prompts where `method` has units (ids and texts); and the normalization. Anything else
is refused in one line naming it, and so is a method or seed that one run lacks.

Normalization. The bar's, by the bar's code: run A's units of every seed, through `scalefree.scale_free_report`,
give each task's zero and scale (the worst and best fixed temperature's means on dev), and run B's own units must
give the same (a run started with `reuse_from` has the very same baseline units). So the values of A and of B are
those their summaries report.

Statistic. Per task, the mean over its test prompts (each averaged over seeds) of B's normalized reward minus A's;
overall, the mean of the task values, every task weighted equally (the bar's `overall`). The 95% interval is the
bar's: with one seed the paired stratified bootstrap of `scale_free_report` (prompts drawn within task, B and A on
the same draws, bootstrap seed 0); with several, `stats.two_level_bootstrap` over training seeds, then prompts
within task (`evaluation.aggregate.seed_differences`, as `with_seed_uncertainty` widens the bar), per task and
overall, with each seed's own overall difference kept beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..evaluation.aggregate import fixed_settings, seed_differences
from ..evaluation.report.scalefree import normalization_note
from ..evaluation.results import LEVEL_METHOD, OVERALL
from ..evaluation.scalefree import rewards_by_prompt, scale_free_report, task_normalization
from ..stats import two_level_bootstrap
from .aggregate import in_every_seed, load_seed_results

# results.json config keys that change what a prompt's reward means, or the baseline units it is normalized by
PAIRING_KEYS = ("model", "dtype", "chat", "seed", "num_samples", "max_new_tokens", "temperatures", "fixed_top_p",
                "fixed_top_k", "tasks", "fluency", "backend", "stop_when_scored")
TASK_KEYS = ("reward", "max_new_tokens")  # per task in results.json: the resolved reward spec and generation length
NORM_KEYS = ("source", "worst", "best", "zero", "scale")
DEFAULT_METHOD = LEVEL_METHOD["sequence"]
_A, _B = "run A", "run B"  # the two heads' names inside the report: no method of a run is named so


def _short(value) -> str:
    r = repr(value)
    return r if len(r) <= 100 else r[:97] + "..."


def _differ(what: str, a, b) -> ValueError:
    return ValueError(f"the runs differ in {what}: run A {_short(a)}, run B {_short(b)}; their units do not pair")


def _experiment_config(root: Path) -> dict:
    path = root / "experiment_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not an experiment run_dir (no experiment_config.json)")
    return json.loads(path.read_text())


def _test_prompts(res: dict, method: str, task: str) -> dict:
    """{prompt id: prompt text} of `method`'s test units on `task` in one seed's results."""
    return {str(u["prompt_id"]): (u.get("example") or {}).get("prompt") for u in res["units"]
            if u["split"] == "test" and u["task"] == task and u["method"] == method}


def _check_seed(a: dict, b: dict, method: str, seed) -> None:
    """One seed's results of the two runs pair for `method` (module docstring), or a one-line ValueError."""
    for run, res in (("A", a), ("B", b)):
        if method not in res["methods"]:
            raise ValueError(f"method {method!r} is not in run {run} (seed {seed}), which evaluated {sorted(res['methods'])}")
    for k in PAIRING_KEYS:
        if a["config"].get(k) != b["config"].get(k):
            raise _differ(f"seed {seed}'s evaluation setting {k!r}", a["config"].get(k), b["config"].get(k))
    if list(a["tasks"]) != list(b["tasks"]):
        raise _differ(f"seed {seed}'s tasks", list(a["tasks"]), list(b["tasks"]))
    for t in a["tasks"]:
        for k in TASK_KEYS:
            if a["tasks"][t].get(k) != b["tasks"][t].get(k):
                raise _differ(f"the {k} of task {t!r} (seed {seed})", a["tasks"][t].get(k), b["tasks"][t].get(k))
        pa, pb = _test_prompts(a, method, t), _test_prompts(b, method, t)
        if not pa and not pb:
            raise ValueError(f"method {method!r} has no test unit on task {t!r} (seed {seed}) in either run")
        for p in sorted(set(pa) | set(pb)):
            if p not in pa or p not in pb:
                raise ValueError(f"test prompt {p!r} of task {t!r} (seed {seed}) has a {method!r} unit in run "
                                 f"{'A' if p in pa else 'B'} only; their units do not pair")
            if pa[p] != pb[p]:
                raise _differ(f"the text of test prompt {p!r} of task {t!r} (seed {seed})", pa[p], pb[p])


def _check_normalization(report: dict, units_b: list, methods_b: dict) -> None:
    """Run B's own normalization (the bar's, on B's units) equals run A's, which `report` holds."""
    test, dev, fixed = rewards_by_prompt(units_b, "test"), rewards_by_prompt(units_b, "dev"), fixed_settings(methods_b)
    for t, rec in report["tasks"].items():
        na, nb = rec["normalization"], task_normalization(dev.get(t), test[t], fixed)
        for k in NORM_KEYS:
            # the same units summed in another order differ in the last bits
            same = (math.isclose(na[k], nb[k], rel_tol=1e-9, abs_tol=1e-12) if isinstance(na[k], float)
                    else na[k] == nb[k])
            if not same:
                raise _differ(f"the normalization of task {t!r} ({k}, from the fixed temperatures as the bar's)", na[k], nb[k])


def _iv(d: dict) -> dict:
    return {"mean": d["mean"], "lo": d["lo"], "hi": d["hi"]}


def compare_runs(run_a, run_b, method: str = DEFAULT_METHOD, n_boot: int | None = None, alpha: float = 0.05) -> dict:
    """Run B's `method` minus run A's, normalized per task as the bar (module docstring). `n_boot`: bootstrap
    resamples, by default run A's `n_bootstrap`. Returns
    {"run_a", "run_b", "method", "seeds", "ci_levels", "n_boot", "alpha",
     "tasks": {task: {"n", "normalization", "a", "b", "diff": iv}},
     OVERALL: {"n", "a", "b", "diff": iv, and with several seeds "per_seed": {seed: B - A}}},
    a, b: each run's normalized reward; iv = {"mean", "lo", "hi"}. A difference in what pairs the runs, or a method
    or seed one of them lacks, is a one-line ValueError naming it."""
    root_a, root_b = Path(run_a), Path(run_b)
    cfg_a, cfg_b = _experiment_config(root_a), _experiment_config(root_b)
    seeds, seeds_b = list(cfg_a["seeds"]), list(cfg_b["seeds"])
    for s in seeds + seeds_b:
        if s not in seeds or s not in seeds_b:
            raise ValueError(f"seed {s} is in run {'A' if s in seeds else 'B'} only (run A: seeds {seeds}, run B: "
                             f"seeds {seeds_b}); compare runs of the same seeds")
    raw_a, raw_b = load_seed_results(root_a, seeds), load_seed_results(root_b, seeds)
    for s in seeds:
        _check_seed(raw_a[s], raw_b[s], method, s)
    # the methods the bar keeps (those of every seed), as `experiment.aggregate.aggregate` reads a run
    (res_a, _), (res_b, _) = in_every_seed(raw_a), in_every_seed(raw_b)
    units_a = [u for s in seeds for u in res_a[s]["units"]]
    units_b = [u for s in seeds for u in res_b[s]["units"]]
    methods_a = {m: d for s in seeds for m, d in res_a[s]["methods"].items()}
    methods_b = {m: d for s in seeds for m, d in res_b[s]["methods"].items()}
    fixed = fixed_settings(methods_a)
    if not fixed:
        raise ValueError(f"run A ({root_a}) has no fixed temperature, which the normalization needs")
    test_a, test_b = rewards_by_prompt(units_a, "test"), rewards_by_prompt(units_b, "test")
    tasks = [t for t in res_a[seeds[0]]["tasks"] if t in test_a]
    paired = {t: {**{f: test_a[t][f] for f in fixed if f in test_a[t]}, _A: test_a[t][method], _B: test_b[t][method]}
              for t in tasks}
    n_boot = int(n_boot or cfg_a.get("n_bootstrap") or 2000)
    report = scale_free_report(paired, rewards_by_prompt(units_a, "dev"), fixed, fixed + [_A, _B], n_boot=n_boot,
                               alpha=alpha, seed=0, head_to_head=[_B])
    _check_normalization(report, units_b, methods_b)
    norm, diff = report["normalized"], report["head_to_head"][_B][_A]["difference"]
    out = {"run_a": str(root_a), "run_b": str(root_b), "method": method, "seeds": seeds,
           "ci_levels": "prompts within task", "n_boot": n_boot, "alpha": alpha,
           "tasks": {t: {"n": report["tasks"][t]["n"], "normalization": report["tasks"][t]["normalization"],
                         "a": norm[_A]["tasks"][t]["mean"], "b": norm[_B]["tasks"][t]["mean"],
                         "diff": _iv(diff["tasks"][t])} for t in tasks},
           OVERALL: {"n": sum(report["tasks"][t]["n"] for t in tasks), "a": norm[_A]["overall"]["mean"],
                     "b": norm[_B]["overall"]["mean"], "diff": _iv(diff["overall"])}}
    if len(seeds) > 1:  # the interval spans the seeds too; the point stays the seed-averaged one, as the bar's
        by_seed = {s: [{**u, "method": name} for name, res in ((_A, res_a), (_B, res_b)) for u in res[s]["units"]
                       if u["method"] == method] for s in seeds}
        per_seed = seed_differences(by_seed, _B, _A, report)
        levels = {OVERALL: per_seed, **{t: {s: {t: v[t]} for s, v in per_seed.items()} for t in tasks}}
        for key, values in levels.items():
            two = two_level_bootstrap(values, n_boot=n_boot, alpha=alpha, seed=0)
            rec = out[OVERALL] if key == OVERALL else out["tasks"][key]
            rec["diff"] = {**rec["diff"], "lo": two["lo"], "hi": two["hi"]}
            if key == OVERALL:
                rec["per_seed"] = two["per_seed"]
        out["ci_levels"] = "training seeds, then prompts within task"
    return out


def _signed(iv: dict) -> str:
    return f"{iv['mean']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]"


def compare_markdown(cmp: dict) -> str:
    """The comparison as markdown: what was compared, then one row per task and the overall row."""
    pct = round(100 * (1 - cmp["alpha"]))
    lines = [f"## {cmp['method']}: run B minus run A on the same test prompts", "",
             f"- run A: `{cmp['run_a']}`", f"- run B: `{cmp['run_b']}`",
             "- normalized reward per task, the bar's (the same in both runs): "
             + "; ".join(normalization_note(t, r["normalization"]) for t, r in cmp["tasks"].items())
             + f"; {OVERALL}: tasks weighted equally",
             f"- B - A paired prompt by prompt, {pct}% CI over {cmp['ci_levels']} ({cmp['n_boot']} resamples); "
             f"seed{'s' if len(cmp['seeds']) > 1 else ''} {', '.join(map(str, cmp['seeds']))}", "",
             f"| task | prompts | A | B | B - A [{pct}% CI] |", "|---|---:|---:|---:|---|"]
    rows = [*cmp["tasks"].items(), (f"**{OVERALL}**", cmp[OVERALL])]
    lines += [f"| {t} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} | {_signed(r['diff'])} |" for t, r in rows]
    if "per_seed" in cmp[OVERALL]:
        seeds = ", ".join(f"seed {s} {v:+.3f}" for s, v in cmp[OVERALL]["per_seed"].items())
        lines += ["", f"Overall B - A per seed: {seeds}."]
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT_METHOD", "PAIRING_KEYS", "TASK_KEYS", "compare_markdown", "compare_runs"]
