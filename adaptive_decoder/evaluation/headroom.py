"""Headroom first: is there anything for a per-task (let alone per-prompt) decoding policy to win?

Runs the evaluation suite with only fixed configurations (greedy and the fixed-temperature grid) on the dev and
test prompts of every task, plus the dev-picked per-task oracle, and reports per task the reward vs temperature
(mean over prompts with a 95% bootstrap CI) and, for the mix of tasks, the oracle's normalized reward minus that of
the best single fixed temperature (`adaptive_decoder.evaluation.scalefree`: per task, worst / best fixed temperature on dev =
0 / 1, tasks weighted equally; the best single temperature chosen on dev), with its paired 95% CI. If that gain
is not clearly above 0, no adaptive method can beat the best single temperature on these tasks.

Label-free single settings: a config's methods that tune ONE setting for the whole mix on dev, without task labels
or a trained head (`label_free_settings`, read from the traits: pooled dev fits that take no head and are no
control, e.g. `min_p_mix`, `best_joint_mix`), run too. The headline is then the oracle minus the BEST label-free
single setting (`label_free_headroom`): among the best fixed temperature and those, the one with the highest pooled
normalized dev reward, so it is chosen on dev as the oracle is; the fixed-temperature headroom stays in the report.

A reward that compares a prompt's samples (novelty, distinct_valid) also depends on how many samples it compares:
novelty is 1 - the max similarity to the *other* samples, so a greedy-ish sample meets fewer near-copies among 2
than among 8. The collection scores each sample among 1 + `twins`, the evaluation among its k, and LPO learns the
collection's ranking of temperatures. `group_size_report` rescores the same samples in smaller groups (no new
generation) so the two rankings can be compared before an experiment is spent on a mismatch.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .config import EvalConfig
from .harness import eval_tasks, run_evaluation
from .scalefree import units_report
from ..methods.base import method_traits
from ..rewards import build_reward, spec_needs_group
from ..stats import bootstrap_mean_ci, format_ci, paired_comparison

HEADROOM_METHODS = ["greedy", "fixed", "oracle"]


def label_free_settings(methods: list) -> list:
    """The methods among `methods` that tune ONE setting for the whole mix on dev without task labels or a head:
    pooled dev fits (`MethodTraits.pooled`, `needs_dev`) that take no trained head and are not controls."""
    def single(t):
        return t.needs_dev and t.pooled and not t.takes_heads and not t.is_control
    return [m for m in methods if single(method_traits(m))]


def headroom_config(cfg: EvalConfig) -> EvalConfig:
    """`cfg` with only the fixed-configuration methods, the oracle and the label-free single settings among its
    `methods` (`label_free_settings`); anything else is dropped."""
    extra = [m for m in label_free_settings(cfg.methods) if m not in HEADROOM_METHODS]
    return replace(cfg, methods=[*HEADROOM_METHODS, *extra], head_paths=[])


def label_free_headroom(results: dict) -> dict | None:
    """The oracle minus the best label-free single setting, from `run_evaluation`'s results; None when no pooled
    fit (one setting for the mix, scored on dev) ran.

    Candidates: the best single fixed temperature (its pooled normalized dev score, `scale_free.best_fixed`) and
    every pooled fit with dev scores (its chosen candidate's score, the pooled normalized dev reward: the bar's
    scale, as the harness gives those fits the run's grid as anchors). The highest dev score wins (a tie goes to
    the fixed temperature, then to the earlier method); where the grid has no dev results the test normalized
    means decide, as for the bar. {"settings": {name: {"chosen", "score", "normalized"}}, "best", "chosen_on",
    "normalized", "gain": iv, "per_task_gain": {task: iv}} with iv = {"mean", "lo", "hi"}, paired 95% CIs over
    prompts on the scale-free report's draws. (A task whose grid ties on dev is left raw by the fits but
    normalized on test by the report; only there do the two dev scales differ.)"""
    sf = results["scale_free"]
    first = next(iter(results["tasks"].values())).get("oracle") or {}  # a pooled fit is the same on every task
    fits = {n: f for n, f in first.items() if f.get("pooled") and f.get("dev_scores") and n in sf["normalized"]}
    if not fits:
        return None
    best_fixed, on = sf["best_fixed"]["name"], sf["best_fixed"]["chosen_on"]
    chosen = {best_fixed: best_fixed, **{n: f["chosen"] for n, f in fits.items()}}
    if on == "dev":
        score = {best_fixed: sf["best_fixed"]["scores"][best_fixed],
                 **{n: f["dev_scores"][f["chosen"]] for n, f in fits.items()}}
    else:
        score = {n: sf["normalized"][n]["overall"]["mean"] for n in chosen}
    names = list(chosen)
    best = max(names, key=lambda n: (score[n], -names.index(n)))
    if best == best_fixed:
        diff = sf["differences"]["oracle"][best]
    else:  # the same paired draws as the report's (same prompts, n_boot and seed), with the oracle's head-to-head
        rep = units_report(results["units"], list(results["tasks"]), sf["fixed"], sf["methods"], n_boot=sf["n_boot"],
                           seed=sf["seed"], head_to_head=["oracle"])
        diff = rep["head_to_head"]["oracle"][best]["difference"]
    settings = {n: {"chosen": chosen[n], "score": score[n], "normalized": sf["normalized"][n]["overall"]}
                for n in names}
    return {"settings": settings, "best": best, "chosen_on": on, "normalized": sf["normalized"][best]["overall"],
            "gain": diff["overall"], "per_task_gain": diff["tasks"]}


def headroom_report(results: dict) -> dict:
    """{"tasks": {task: {"temperatures": {name: {"temperature", "reward": ci}}, "oracle_choice", "best_on_test"}},
    "best_single": name, "oracle_normalized", "best_single_normalized", "gain": {"mean", "lo", "hi"},
    "per_task_gain": {task: iv}} from `run_evaluation`'s results."""
    sf = results["scale_free"]
    best = sf["best_fixed"]["name"]
    fixed = sf["fixed"]
    temps = {m: d.get("temperature") for m, d in results["methods"].items()}
    out = {"tasks": {}, "best_single": best, "best_single_chosen_on": sf["best_fixed"]["chosen_on"],
           "oracle_normalized": sf["normalized"]["oracle"]["overall"],
           "best_single_normalized": sf["normalized"][best]["overall"],
           "gain": sf["differences"]["oracle"][best]["overall"],
           "per_task_gain": sf["differences"]["oracle"][best]["tasks"]}
    for t, tres in results["tasks"].items():
        rows = {f: {"temperature": temps.get(f), "reward": tres["methods"][f]["reward"],
                    "normalized": sf["normalized"][f]["tasks"][t]} for f in fixed}
        out["tasks"][t] = {"temperatures": rows, "oracle_choice": (tres.get("oracle") or {}).get("oracle", {}).get("chosen"),
                           "best_on_test": max(rows, key=lambda f: rows[f]["reward"]["mean"]),
                           "normalization": sf["tasks"][t]["normalization"], "n": sf["tasks"][t]["n"]}
    label_free = label_free_headroom(results)
    if label_free is not None:
        out["label_free"] = label_free
    return out


def group_divisors(k: int) -> list[int]:
    """Group sizes the k samples of a unit split into evenly: every divisor of k from 2 up, k last."""
    return [g for g in range(2, k + 1) if k % g == 0]


def group_reward(task):
    """The part of a task's reward that compares a prompt's samples (novelty, distinct_valid), as a
    `CompositeReward` with the task's weights; None when the reward has no such component."""
    spec = {n: o for n, o in task.reward_spec.items() if spec_needs_group(n, o)}
    return build_reward(spec) if spec else None


def regrouped_rewards(task, grp, texts: list[str], example: dict, rewards: list[float], group_size: int) -> list[float]:
    """Each sample's reward with the task's group components (`grp = group_reward(task)`) scored among consecutive
    groups of `group_size` of the k samples (samples 0..g-1, g..2g-1, ...) instead of among all k.

    `rewards` are the stored per-sample rewards (all k compared); the change is the group components' weighted
    total rescored minus the same total among all k, so the rest of the reward (e.g. fluency, which needs a model)
    is never recomputed."""
    k = len(texts)
    if group_size < 2 or k % group_size:
        raise ValueError(f"group_size must be >= 2 and divide the {k} samples, got {group_size}")
    if grp is None:
        return list(rewards)
    scored = [task.postprocess(t or "") for t in texts]
    key = example.get("id", example.get("prompt"))
    whole = grp.score(scored, [example] * k)
    parts = grp.score(scored, [{**example, "id": f"{key}#{j // group_size}"} for j in range(k)])
    return [r + p - w for r, p, w in zip(rewards, parts, whole)]


def group_size_report(units: list[dict], tasks: dict, fixed: list[str], split: str = "test",
                      n_bootstrap: int = 2000) -> dict:
    """Per task whose reward compares samples: the fixed settings' mean reward on `split` when that reward is
    scored among groups of g of each prompt's k samples, for every g in `group_divisors(k)`.

    {task: {"k", "n", "split", "group_sizes", "rewards": {setting: {str(g): ci}}, "best": {str(g): setting}, "margins":
    {other setting: {str(g): the evaluation's best (g = k) minus it, paired over prompts, with its 95% CI}},
    "misleading_sizes": [g whose ranking puts another setting first, or loses a lead that is clear at k]}}; tasks
    without a group reward, or with fewer than 4 samples per prompt, are left out."""
    out = {}
    for tname, task in tasks.items():
        grp = group_reward(task)
        if grp is None:
            continue
        by = {f: {u["prompt_id"]: u for u in units if u["method"] == f and u["task"] == tname and u["split"] == split}
              for f in fixed}
        ids = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
        if not ids:
            continue
        k = len(by[fixed[0]][ids[0]]["samples"])
        sizes = group_divisors(k)
        if k < 4 or any(len(by[f][i]["samples"]) != k for f in fixed for i in ids):
            continue
        per = {f: {g: [] for g in sizes} for f in fixed}  # per-prompt mean reward
        for f in fixed:
            for i in ids:
                u = by[f][i]
                texts = [s["text"] for s in u["samples"]]
                rewards = [s["metrics"]["reward"] for s in u["samples"]]
                for g in sizes:
                    r = rewards if g == k else regrouped_rewards(task, grp, texts, u["example"], rewards, g)
                    per[f][g].append(sum(r) / k)
        # keys are str(g): the report is JSON, and headroom.md is rebuilt from headroom.json
        rew = {f: {str(g): bootstrap_mean_ci(per[f][g], n_boot=n_bootstrap) for g in sizes} for f in fixed}
        best = {str(g): max(fixed, key=lambda f: rew[f][str(g)]["mean"]) for g in sizes}
        top = best[str(k)]
        margins = {f: {} for f in fixed if f != top}
        for f in margins:
            for g in sizes:
                c = paired_comparison(per[top][g], per[f][g], n_boot=n_bootstrap)
                margins[f][str(g)] = {"mean": c["mean_diff"], "lo": c["diff_lo"], "hi": c["diff_hi"]}
        # a smaller group misleads when it ranks another setting first, or loses a lead the evaluation's group shows
        misleading = [g for g in sizes[:-1] if best[str(g)] != top or any(
            m[str(k)]["lo"] > 0 >= m[str(g)]["lo"] for m in margins.values())]
        out[tname] = {"k": k, "n": len(ids), "split": split, "group_sizes": sizes, "rewards": rew, "best": best,
                      "margins": margins, "misleading_sizes": misleading}
    return out


def group_size_markdown(gs: dict) -> list[str]:
    """Markdown lines of `group_size_report`: per task, reward vs setting per group size and the evaluation best's margins."""
    lines = []
    for t, r in gs.items():
        sizes, k = [str(g) for g in r["group_sizes"]], r["k"]
        lines += ["", f"## {t}: the group reward vs the group it is scored in ({r.get('split', 'test')} prompts, n={r['n']})", "",
                  f"The evaluation scores each prompt's {k} samples together; a collection with `twins: m` scores "
                  "each sample among 1 + m. Same samples, regrouped:", "",
                  "| setting | " + " | ".join(f"group of {g}" for g in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for f, by_g in r["rewards"].items():
            lines.append(f"| {f} | " + " | ".join(("**%.3f**" if r["best"][g] == f else "%.3f") % by_g[g]["mean"]
                                                  for g in sizes) + " |")
        top = r["best"][str(k)]
        for f, by_g in r["margins"].items():
            lines.append(f"| {top} − {f} | " + " | ".join(_iv(by_g[g]) for g in sizes) + " |")
        if r["misleading_sizes"]:
            lines += ["", f"**Scored in groups of {', '.join(map(str, r['misleading_sizes']))}, this reward does not "
                      f"rank the settings as the evaluation's group of {k} does** (another setting first, or a lead of "
                      f"{top} that is no longer clear): a collection should score each sample among {k}, "
                      f"`twins: {k - 1}`."]
    return lines


def _ci3(ci: dict) -> str:
    return format_ci(ci["mean"], ci["lo"], ci["hi"])


def _iv(iv: dict) -> str:
    return f"{iv['mean']:+.3f} [{iv['lo']:+.3f}, {iv['hi']:+.3f}]"


def headroom_markdown(rep: dict) -> str:
    tasks = list(rep["tasks"])
    fixed = list(next(iter(rep["tasks"].values()))["temperatures"])
    lines = ["## Reward vs temperature (test prompts, mean [95% CI])", "",
             "| setting | " + " | ".join(f"{t} (n={rep['tasks'][t]['n']})" for t in tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for f in fixed:
        lines.append(f"| {f} | " + " | ".join(_ci3(rep["tasks"][t]["temperatures"][f]["reward"])
                                             for t in tasks) + " |")
    lines.append("| oracle's choice (dev) | " + " | ".join(str(rep["tasks"][t]["oracle_choice"]) for t in tasks) + " |")
    lines.append("| best on test | " + " | ".join(rep["tasks"][t]["best_on_test"] for t in tasks) + " |")
    lines += ["", "## Headroom (normalized: worst / best fixed temperature on dev = 0 / 1, tasks weighted equally)", "",
              f"- best single fixed temperature (chosen on {rep['best_single_chosen_on']}): {rep['best_single']}, "
              f"normalized {rep['best_single_normalized']['mean']:.3f}",
              f"- dev-picked per-task oracle: normalized {rep['oracle_normalized']['mean']:.3f}",
              f"- **HEADROOM: oracle - {rep['best_single']} = {_iv(rep['gain'])}** (paired 95% CI)"]
    lines += [f"  - {t}: {_iv(iv)}" for t, iv in rep["per_task_gain"].items()]
    lines += label_free_markdown(rep.get("label_free"))
    lines += group_size_markdown(rep.get("group_sizes") or {})
    return "\n".join(lines) + "\n"


def label_free_markdown(lf: dict | None) -> list[str]:
    """Markdown lines of `label_free_headroom` (none without it)."""
    if not lf:
        return []
    lines = ["", "## Headroom over the best label-free single setting", "",
             "One setting for the whole mix, tuned without task labels (the best fixed temperature, and each method "
             f"tuned once for the mix); the best by pooled normalized reward on {lf['chosen_on']} is the baseline.", "",
             f"| setting | its config | score ({lf['chosen_on']}) | normalized on test [95% CI] |", "|---|---|---|---|"]
    lines += [f"| {n} | {s['chosen']} | {s['score']:.3f} | {_ci3(s['normalized'])} |" for n, s in lf["settings"].items()]
    lines += ["", f"- **HEADROOM: oracle - best label-free single setting ({lf['best']}) = {_iv(lf['gain'])}** "
              "(paired 95% CI)"]
    return lines + [f"  - {t}: {_iv(iv)}" for t, iv in lf["per_task_gain"].items()]


def headroom_line(rep: dict) -> str:
    """The headline: the oracle minus the best label-free single setting where one was tuned for the mix, else
    minus the best single fixed temperature."""
    lf = rep.get("label_free")
    what, g = ((f"best label-free single setting ({lf['best']})", lf["gain"]) if lf
               else (f"best single fixed ({rep['best_single']})", rep["gain"]))
    return f"HEADROOM: oracle - {what} = {g['mean']:+.3f} [95% CI {g['lo']:+.3f}, {g['hi']:+.3f}] normalized"


def run_headroom(cfg: EvalConfig, model=None, tokenizer=None) -> dict:
    """Evaluate the fixed configurations, write headroom.json / headroom.md in cfg.output_dir, return the report."""
    results = run_evaluation(headroom_config(cfg), model=model, tokenizer=tokenizer)
    rep = headroom_report(results)
    out = Path(cfg.output_dir)
    fixed = list(next(iter(rep["tasks"].values()))["temperatures"])
    rep["group_sizes"] = group_size_report(results["units"], eval_tasks(cfg), fixed, n_bootstrap=cfg.n_bootstrap)
    (out / "headroom.json").write_text(json.dumps(rep, indent=1))
    (out / "headroom.md").write_text(headroom_markdown(rep))
    rep["wall_seconds"] = results["wall_seconds"]
    return rep
