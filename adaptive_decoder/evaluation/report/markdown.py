"""Markdown of a run's results: the suite's results.md, the experiment's summary.md and the verdict it ends with.

Renders the dicts the producers write (`evaluation.harness`'s results.json, `experiment.pipeline`'s summary.json)
and nothing else, so a results file can be re-rendered without rerunning anything. Every interval is a 95%
bootstrap CI; a win rate is never shown without it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...methods.base import controls, role_of
from ...modeling.sampling import NEUTRAL
from ..results import FALLBACK, OVERALL, same_decoding, value_order
from .scalefree import BAR_RULE, bar_line, bar_numbers, markdown_sections, rival_line
from ...stats import format_ci


_HEADLINE = {"gsm8k": ["acc_strict", "acc_flexible"], "translation": ["corpus_bleu", "corpus_chrf", "chrf"],
             "constrained_writing": ["concepts", "repetition", "fluency", "self_bleu", "distinct_2"],
             "creative_writing": ["reward_model", "repetition", "fluency", "self_bleu", "distinct_2"]}


SMALL_N = 20  # below this many prompts the percentile bootstrap is unreliable; the table says so


def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


# --- the pieces results.md and summary.md share ------------------------------------------------------------
def _twin_notes(twins: dict, label: dict) -> list[str]:
    """One note per method shown once because it decodes like a fixed setting (`same_decoding`)."""
    return [line for m, f in twins.items() for line in
            (f"`{m}` decodes exactly like `{f}` (the same config, so the same samples): it is shown once, as "
             f"`{label.get(f, f)}`, and the comparison `{m}` vs `{f}` is left out.", "")]


def _reward_table(by_task: dict, tasks: list, methods: list, label: dict) -> list[str]:
    """Mean reward [95% CI] of each method (a row, named by `label` where it has a name) on each task (a column)."""
    lines = ["| method | " + " | ".join(f"{t} (n={by_task[t]['num_test']})" for t in tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for m in methods:
        r = {t: by_task[t]["methods"][m]["reward"] for t in tasks}
        lines.append(f"| {label.get(m, m)} | " + " | ".join(format_ci(r[t]["mean"], r[t]["lo"], r[t]["hi"]) for t in tasks)
                     + " |")
    return lines


def _shown_comparisons(comparisons: list, task: str, twins: dict) -> list:
    """The comparisons on `task`, without a method's comparison with the setting it decodes like (zero by construction)."""
    return [c for c in comparisons if c["task"] == task and twins.get(c["method"]) != c["baseline"]]


# the family a p (Holm) column is adjusted over, said where the tables are
HOLM_NOTE = "p (Holm): the p-value Holm-adjusted over one method's comparisons on one task (its family of tests)"


def _comparison_table(comps: list, signed: bool) -> list[str]:
    """Win / tie / loss, mean difference, p-value and its Holm adjustment per comparison; `signed` writes the
    differences with their sign."""
    def diff(c):
        if not signed:
            return format_ci(c["mean_diff"], c["diff_lo"], c["diff_hi"])
        return f"{c['mean_diff']:+.3f} [{c['diff_lo']:+.3f}, {c['diff_hi']:+.3f}]"

    def holm(c):
        return "—" if c.get("p_holm") is None else f"{c['p_holm']:.3g}"

    return ["| method | vs | win [95% CI] | tie | loss | mean diff [95% CI] | p | p (Holm) |",
            "|---|---|---|---|---|---|---|---|"] + [
        f"| {c['method']} | {c['baseline']} | {format_ci(c['win'], c['win_lo'], c['win_hi'], 2)} | {c['tie']:.2f} | "
        f"{c['loss']:.2f} | {diff(c)} | {c['p_value']:.3g} | {holm(c)} |" for c in comps]


# --- results.md ---------------------------------------------------------------------------------------------
def markdown_table(results: dict) -> str:
    cfg = results["config"]
    # greedy and T=0.0 decode with one config (identical samples): one row, labelled with both names
    twins = same_decoding(results["methods"])
    label = {f: f"{f} (= {m})" for m, f in twins.items()}
    lines = ["# Evaluation results", "",
             f"Model `{cfg['model']}`; {cfg['num_samples']} samples per prompt, max_new_tokens={cfg['max_new_tokens']}, "
             f"seed {cfg['seed']}; wall clock {results['wall_seconds']:.0f} s. Rewards are per-prompt means over the "
             f"samples; intervals are 95% bootstrap CIs over prompts ({cfg['n_bootstrap']} resamples).", ""]
    lines += _twin_notes(twins, label) + ["## Mean reward per task", ""]
    tasks = list(results["tasks"])
    methods = [m for m in results["methods"] if m not in twins]
    lines += _reward_table(results["tasks"], tasks, methods, label)
    if "scale_free" in results:
        lines += [""] + markdown_sections(results["scale_free"], skip_methods=set(twins), skip_pairs=set(twins.items()))
        if results.get("bar"):  # the experiment's bar, applied to this suite's heads
            lines += ["## The bar (as experiments/run.py applies it)", "", BAR_RULE.format(method="A head"), ""]
            lines += [f"- {bar_line(b)}" for b in results["bar"].values()]
    for t in tasks:
        tr = results["tasks"][t]
        keys = [k for k in _HEADLINE.get(t, []) if any(tr["methods"][m]["metrics"].get(k) is not None for m in methods)]
        lines += ["", f"## {t}", "", f"Source: `{tr['source']}`; reward: `{json.dumps(tr['reward'])}`; "
                  f"max_new_tokens={tr.get('max_new_tokens', cfg['max_new_tokens'])}."]
        for name, o in tr.get("oracle", {}).items():
            lines.append(fit_line(name, o, tr["num_dev"]))
        lines += ["", "| method | reward [95% CI] | " + " | ".join(keys) + " | new tokens |",
                  "|---|---|" + "---|" * (len(keys) + 1)]
        for m in methods:
            r = tr["methods"][m]
            lines.append(f"| {label.get(m, m)} | {format_ci(r['reward']['mean'], r['reward']['lo'], r['reward']['hi'])} | "
                         + " | ".join(_fmt(r["metrics"].get(k)) for k in keys) + f" | {_fmt(r['mean_new_tokens'], 1)} |")
        for m in methods:
            if "parse_failed_rate" in tr["methods"][m]:
                lines.append(f"\n{m}: config text unparseable for {tr['methods'][m]['parse_failed_rate']:.0%} of prompts "
                             "(the default config was used for them).")
        comps = _shown_comparisons(results["comparisons"], t, twins)
        if comps:
            lines += ["", f"Paired comparisons on {t} (per-prompt reward, method vs each fixed setting, a trained head "
                      "also vs the oracle and the random controls; win rate with 95% bootstrap CI; p: two-sided paired "
                      f"bootstrap; {HOLM_NOTE}):", ""] + _comparison_table(comps, signed=False)
    comps = _shown_comparisons(results["comparisons"], OVERALL, twins)
    if comps:  # the experiment's summary.md shows the same pooled rows
        lines += ["", f"## Paired comparisons, every task's test prompts pooled (`{OVERALL}`, raw rewards)", "",
                  "On raw scales the task with the widest reward scale dominates; the normalized view weights tasks "
                  f"equally. {HOLM_NOTE[0].upper()}{HOLM_NOTE[1:]}.", ""] + _comparison_table(comps, signed=False)
    small = [t for t in tasks if results["tasks"][t]["num_test"] < SMALL_N]
    if small:
        lines += ["", f"Caution: {', '.join(small)} used fewer than {SMALL_N} test prompts; with so few prompts bootstrap "
                  "intervals are too narrow and p-values too small (a smoke test, not evidence)."]
    if not results["comparisons"]:
        only_fixed = all(role_of(m) == "fixed" for m in results["methods"].values())
        lines += ["", "(No paired comparisons: only fixed temperatures were run; add a method such as 'oracle' or "
                  "'adaptive' to compare it with them.)" if only_fixed else
                  "(No paired comparisons: add method 'fixed' to compare against fixed temperatures.)"]
    return "\n".join(lines) + "\n"


def fit_line(name: str, fit: dict, num_dev: int) -> str:
    """One sentence on what a dev-fitted method (oracle, tuned sampler, best joint config, MeanShift) chose."""
    if fit.get("mean_temperature") is not None:
        return (f"`{name}`: the head's mean temperature on the dev prompts of all tasks is {fit['mean_temperature']:.3f}, "
                f"decoded as `{fit['chosen']}` (its nearest bin).")
    scores = sorted(fit["dev_scores"].items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{k} {v:.3f}" for k, v in scores[:8]) + (f", ... ({len(scores)} in all)" if len(scores) > 8 else "")
    if fit.get("pooled"):
        return (f"`{name}` chose `{fit['chosen']}` for every task, on the dev prompts of all tasks (normalized dev "
                f"reward, mean over tasks, best first: {shown}).")
    return f"`{name}` chose `{fit['chosen']}` on {num_dev} dev prompts (dev rewards, best first: {shown})."


# --- summary.md and the verdict ---------------------------------------------------------------------------
def _share_table(chosen: dict, factor: str) -> str:
    counts = chosen.get(factor, {})
    tot = sum(counts.values())
    if not tot:
        return "n/a"
    return ", ".join(f"{v}: {100 * c / tot:.0f}%" for v, c in sorted(counts.items(), key=lambda kv: value_order(kv[0])))


def _is_neutral(factor: str, value: str) -> bool:
    """A chosen_values key (a number, or FALLBACK, which is never neutral) at `factor`'s no-change value."""
    return value != FALLBACK and factor in NEUTRAL and float(value) == NEUTRAL[factor]


def learned_parameters_table(summary: dict, methods: list, tasks: list) -> list[str]:
    """Markdown rows: per method and task, the share of decisions at each value of each factor. The three factors
    every head has bins for always get a column; any other decoding value the units recorded (min_p,
    repetition_penalty) gets one where some decision set it off its neutral value, so a min-p head's choices are
    visible without reading summary.json, and a temperature head's min_p of 0 everywhere is not a column."""
    chosen = {(m, t): ch for m in methods for t in tasks
              for ch in [summary["tasks"].get(t, {}).get("methods", {}).get(m, {}).get("chosen")] if ch is not None}
    factors = ["temperature", "top_p", "top_k"]
    factors += sorted({f for ch in chosen.values() for f, counts in ch.items()
                       if f not in factors and any(not _is_neutral(f, v) for v, c in counts.items() if c)})
    rows = ["| method | task | " + " | ".join(factors) + " |", "|---|---|" + "---|" * len(factors)]
    return rows + [f"| {m} | {t} | " + " | ".join(_share_table(ch, f) for f in factors) + " |"
                   for (m, t), ch in chosen.items()]


def _bar_sentences(summary: dict) -> list[str]:
    """One line per head: its verdict and numbers; then where the primary head stands against the oracle."""
    primary = summary["bar"]["method"]
    others = [m for m in summary["bars"] if m != primary]
    L = [BAR_RULE.format(method=primary) + (f" {', '.join(others)}: the same bar, reported alongside." if others else ""), ""]
    for m, b in summary["bars"].items():
        if not b.get("evaluated"):
            L.append(f"- **{m}**: not evaluated.")
            continue
        L.append(f"- **{m}: {'MET' if b['met'] else 'NOT MET'}**: {bar_numbers(b)}.")
    sf = summary["scale_free"]
    # the per-task oracle that is a control (the temperature grid's; best_joint fits per task too but is a baseline)
    oracle = [m for m in controls(list(summary["methods"]))
              if role_of(summary["methods"][m]) == "oracle" and m in sf["normalized"]]
    if oracle and summary["bar"].get("evaluated"):
        o = sf["normalized"][oracle[0]]["overall"]
        v = summary["bar"]["method_normalized"]
        where = "inside" if o["lo"] <= v <= o["hi"] else ("below" if v < o["lo"] else "above")
        L += ["", f"For reference, the per-task oracle (the best temperature of each task, chosen on its dev prompts) "
                  f"reaches an overall normalized reward of {o['mean']:.3f} [95% CI {o['lo']:.3f}, {o['hi']:.3f}]; "
                  f"{primary}'s {v:.3f} lies {where} that interval."]
    rivals = _rival_lines(summary)
    if rivals:
        L += [""] + [f"- {r}." for r in rivals]
    return L


def _rival_lines(summary: dict) -> list[str]:
    """Each head against its strongest baseline (`report.scalefree.rival_line`), greedy's twin left out."""
    twins = set(summary.get("same_decoding", {}))
    return [r for m in summary["bars"] for r in [rival_line(summary["scale_free"], m, skip=twins)] if r]


def summary_markdown(summary: dict) -> str:
    """summary.md, from summary.json's dict alone (the heads are the keys of its `bars`)."""
    tasks = [t for t in summary["tasks"] if t != OVERALL] + [OVERALL]
    twins = summary.get("same_decoding", {})
    methods = [m for m in summary["methods"] if m not in twins]
    length = f"; {summary['max_new_tokens']} max new tokens" if summary.get("max_new_tokens") else ""
    L = ["# Experiment summary", "",
         f"Model `{summary['model']}`; seeds {summary['seeds']}; heads: {', '.join(summary['bars'])}{length}. Each "
         f"prompt's reward is its mean over the k samples and over seeds; intervals are 95% bootstrap CIs over test "
         f"prompts ({summary['scale_free']['n_boot']} resamples).", "",
         "## The bar", ""] + _bar_sentences(summary) + [""]
    L += _twin_notes(twins, {})
    if summary.get("methods_left_out"):
        L += ["Left out, because not every seed evaluated them: " + "; ".join(
            f"{m} (seeds {', '.join(map(str, s))})" for m, s in summary["methods_left_out"].items()) + ".", ""]
    L += markdown_sections(summary["scale_free"], skip_methods=set(twins), skip_pairs=set(twins.items()))
    L += ["## Mean reward per task, raw (95% CI)", "",
          f"`{OVERALL}` pools the test prompts of every task on their raw scales, so the task with the widest reward "
          "scale dominates it; the bar uses the normalized rewards above.", ""]
    L += _reward_table(summary["tasks"], tasks, methods, {})
    L += ["", "Per-seed overall means: " + "; ".join(
        f"seed {s}: " + ", ".join(f"{m} {v:.3f}" for m, v in ps["overall"].items() if v is not None and m not in twins)
        for s, ps in summary["per_seed"].items()), ""]
    seeds = list(summary["per_seed"].values())

    def per_seed(label: str, chosen) -> list[str]:  # "label: task: seed 0's choice, seed 1's; task: ..."
        per_task = {t: [chosen(ps, t) for ps in seeds] for t in tasks if t != OVERALL}
        return [f"{label}: " + "; ".join(f"{t}: {', '.join(map(str, v))}" for t, v in per_task.items()), ""]

    if any(ps["oracle_choice"].get(t) for ps in seeds for t in tasks if t != OVERALL):
        L += per_seed("Oracle's choice on the dev prompts (per seed)", lambda ps, t: ps["oracle_choice"].get(t))
    # the other dev-fitted methods (a tuned sampler per task or for the mix, MeanShift), the same way
    for m in dict.fromkeys(m for ps in seeds for by_m in ps.get("fitted_choice", {}).values() for m in by_m):
        L += per_seed(f"`{m}`'s choice (per seed)", lambda ps, t, m=m: ps.get("fitted_choice", {}).get(t, {}).get(m))
    L += ["## Paired comparisons vs each fixed temperature, raw", "",
          "Win / tie / loss on per-prompt rewards (win rate with 95% CI), mean difference with 95% CI, two-sided "
          f"paired-bootstrap p-value; {HOLM_NOTE}. Here a tie is its own column (the paper's win rate above counts it "
          "1/2). AD heads are also compared with the oracle and the random controls.", ""]
    for t in tasks:
        rows = _shown_comparisons(summary["comparisons"], t, twins)
        if rows:
            L += [f"### {t}", ""] + _comparison_table(rows, signed=True) + [""]
    choosers = [m for m in methods if any("chosen" in summary["tasks"][t]["methods"].get(m, {}) for t in tasks if t != OVERALL)]
    if choosers:
        L += ["## Learned decoding parameters per task (share of decisions on the test prompts, all seeds)", ""]
        L += learned_parameters_table(summary, choosers, tasks) + [""]
        # "parse_failure_rate": the key of a summary.json written by an older version
        pf = [(m, t, r) for m in choosers for t in tasks
              for d in [summary["tasks"].get(t, {}).get("methods", {}).get(m, {})]
              for r in [d.get("parse_failed_rate", d.get("parse_failure_rate"))] if r is not None]
        if pf:
            L += ["HAG config-text parse failures (the default config was used): "
                  + "; ".join(f"{m} on {t}: {100 * r:.0f}%" for m, t, r in pf) + ".", ""]
    L += ["## Task metrics (mean over seeds)", ""]
    for t in tasks:
        if t == OVERALL:
            continue
        ms = summary["tasks"][t]["methods"]
        keys = sorted({k for m in methods for k in ms[m].get("metrics", {})} - {"reward"})
        if not keys:
            continue
        L += [f"### {t}", "", "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for m in methods:
            vals = ms[m].get("metrics", {})
            L.append(f"| {m} | " + " | ".join("n/a" if vals.get(k) is None else f"{vals[k]:.3f}" for k in keys) + " |")
        L.append("")
    L += ["## Training diagnostics", "", "| seed/level | samples | pairs (per task) | ties skipped | final LPO accuracy | "
          "final loss | collect s | train s |", "|---|---|---|---|---|---|---|---|"]
    for k, d in summary["training"].items():
        p = d.get("pairs") or {}
        fin = d.get("final") or {}
        acc = fin.get("rewards/accuracies")
        loss = fin.get("loss")
        L.append(f"| {k} | {d.get('samples', 'n/a')} | {p.get('pairs', 'n/a')} ({json.dumps(p.get('pairs_per_task', {}))}) | "
                 f"{p.get('ties_skipped', 'n/a')} | {'n/a' if acc is None else f'{acc:.2f}'} | "
                 f"{'n/a' if loss is None else f'{loss:.4f}'} | {d.get('collect_wall_s', 'n/a')} | "
                 f"{d.get('train_wall_s', 'n/a')} |")
    L += ["", "## Wall-clock time per stage (seconds; a resumed stage shows its original time)", "",
          "| stage | seconds |", "|---|---|"]
    for k, v in summary["timings"].items():
        L.append(f"| {k} | {v} |")
    if summary.get("plots"):
        L += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in summary["plots"]]
    return "\n".join(L) + "\n"


def verdict_block(summary: dict) -> list[str]:
    """The few lines a run ends with: what was compared, the bar, the numbers, and last the `BAR ...` line."""
    sf = summary["scale_free"]
    tasks = ", ".join(f"{t} (n={d['n']})" for t, d in sf["tasks"].items())
    primary = summary["bar"]
    L = [f"Compared {', '.join(summary['bars'])} with the fixed temperatures {', '.join(sf['fixed'])} on the test prompts "
         f"of {tasks}, seeds {list(summary['seeds'])}; per task, rewards are normalized so that the worst / best fixed "
         "temperature on dev score 0 / 1, tasks weighted equally.",
         "The bar: " + BAR_RULE.format(method=primary["method"])]
    for m, b in summary["bars"].items():
        if m != primary["method"]:
            L.append(f"{m} (same bar, for reference): {'met' if b.get('met') else 'not met'}: {bar_numbers(b)}")
    return L + _rival_lines(summary) + [bar_line(primary)]
