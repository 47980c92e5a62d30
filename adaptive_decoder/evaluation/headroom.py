"""Headroom first: is there anything for a per-task (let alone per-prompt) decoding policy to win?

Runs the evaluation suite with only fixed configurations (greedy and the fixed-temperature grid) on the dev and
test prompts of every task, plus the dev-picked per-task oracle, and reports per task the reward vs temperature
(mean over prompts with a 95% bootstrap CI) and, for the mix of tasks, the oracle's normalized reward minus that of
the best single fixed temperature (`adaptive_decoder.evaluation.scalefree`: per task, worst / best fixed temperature on dev =
0 / 1, tasks weighted equally; the best single temperature chosen on dev), with its paired 95% CI. If that gain
is not clearly above 0, no adaptive method can beat the best single temperature on these tasks.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .config import EvalConfig
from .harness import run_evaluation
from ..stats import format_ci

HEADROOM_METHODS = ["greedy", "fixed", "oracle"]


def headroom_config(cfg: EvalConfig) -> EvalConfig:
    """`cfg` with only the fixed-configuration methods (and the oracle); anything else in `methods` is dropped."""
    return replace(cfg, methods=list(HEADROOM_METHODS), head_paths=[])


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
    return out


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
    return "\n".join(lines) + "\n"


def headroom_line(rep: dict) -> str:
    g = rep["gain"]
    return (f"HEADROOM: oracle - best single fixed ({rep['best_single']}) = {g['mean']:+.3f} "
            f"[95% CI {g['lo']:+.3f}, {g['hi']:+.3f}] normalized")


def run_headroom(cfg: EvalConfig, model=None, tokenizer=None) -> dict:
    """Evaluate the fixed configurations, write headroom.json / headroom.md in cfg.output_dir, return the report."""
    results = run_evaluation(headroom_config(cfg), model=model, tokenizer=tokenizer)
    rep = headroom_report(results)
    out = Path(cfg.output_dir)
    (out / "headroom.json").write_text(json.dumps(rep, indent=1))
    (out / "headroom.md").write_text(headroom_markdown(rep))
    rep["wall_seconds"] = results["wall_seconds"]
    return rep
