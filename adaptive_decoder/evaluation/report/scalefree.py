"""Markdown of the scale-free report and of the bar (`adaptive_decoder.evaluation.scalefree` computes both): the
normalized-reward and win-rate tables, each head against the other methods, the bar's rule and its one-line
verdict. results.md, summary.md, the run's closing lines and the model card all render them from here.
"""

from __future__ import annotations

from ..scalefree import strongest_rival

BAR_RULE = ("{method} meets the bar when its overall normalized reward minus that of the best single fixed "
            "temperature (one temperature for all tasks, chosen on dev) has a paired 95% CI above 0, and its mean win "
            "rate vs every fixed temperature is above 50% with the 95% CI excluding 50%.")


def _why_not(bar: dict) -> list[str]:
    out = [] if bar["beats_best_fixed"] else ["the difference's CI does not lie above 0"]
    short = [f for f, w in bar["win_rates"].items() if not (w["mean"] > 0.5 and w["ci"][0] > 0.5)]
    if short:
        out.append(f"the win-rate CI vs {', '.join(short)} does not lie above 50%")
    return out


def bar_numbers(bar: dict) -> str:
    """The bar's numbers in one line (no verdict)."""
    if not bar.get("evaluated"):
        return f"{bar['method']} was not evaluated"
    lo, hi = bar["diff_ci"]
    wins = ", ".join(f"{f} {100 * w['mean']:.0f}% [{100 * w['ci'][0]:.0f}, {100 * w['ci'][1]:.0f}]"
                     for f, w in bar["win_rates"].items())
    return (f"{bar['method']} normalized reward {bar['method_normalized']:.3f} vs best fixed {bar['baseline']} "
            f"(chosen on {bar['baseline_chosen_on']}) {bar['baseline_normalized']:.3f}: difference {bar['diff']:+.3f} "
            f"[95% CI {lo:+.3f}, {hi:+.3f}]{_seed_note(bar)}; win rate vs {wins}")


def _seed_note(bar: dict) -> str:
    """Where the interval spans training seeds (`evaluation.aggregate.with_seed_uncertainty`): that, and each seed's
    own difference (the per-seed verdicts)."""
    if "per_seed" not in bar:
        return ""
    seeds = ", ".join(f"seed {s} {v:+.3f}" for s, v in bar["per_seed"].items())
    return f" over {len(bar['per_seed'])} training seeds and their prompts ({seeds})"


def bar_line(bar: dict) -> str:
    """`BAR MET: <numbers>` or `BAR NOT MET: <numbers> (<what failed>)`."""
    if bar.get("met"):
        return f"BAR MET: {bar_numbers(bar)}"
    why = _why_not(bar) if bar.get("evaluated") else []
    return f"BAR NOT MET: {bar_numbers(bar)}" + (f" ({'; '.join(why)})" if why else "")


def _iv(iv: dict, digits: int = 3, pct: bool = False) -> str:
    if pct:
        return f"{100 * iv['mean']:.0f}% [{100 * iv['lo']:.0f}, {100 * iv['hi']:.0f}]"
    return f"{iv['mean']:.{digits}f} [{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]"


def normalization_note(t: str, n: dict) -> str:
    """How task `t` is normalized (its `task_normalization` record `n`), in words."""
    if n["source"] == "raw":
        return f"{t}: every fixed temperature scored the same, so its rewards stay raw (scale 1)"
    where = "dev" if n["source"] == "dev" else "test (no usable dev results)"
    return (f"{t}: 0 = {n['worst']} ({n['zero']:.3f}), 1 = {n['best']} ({n['zero'] + n['scale']:.3f}), "
            f"means on {where}")


def markdown_sections(report: dict, skip_methods=(), skip_pairs=()) -> list[str]:
    """Markdown lines: the normalized-reward table and the win-rate table (each with its definition).
    `skip_methods`: rows to leave out of the reward table; `skip_pairs`: (method, fixed) win-rate rows to leave out
    (e.g. greedy vs T=0.0, the same decoding)."""
    tasks = list(report["tasks"])
    head = "| method | " + " | ".join(f"{t} (n={report['tasks'][t]['n']})" for t in tasks) + " | overall |"
    rule = "|---|" + "---|" * (len(tasks) + 1)
    L = ["## Normalized reward per task (95% CI)", "",
         "Per task, rewards are mapped linearly so that the worst and the best fixed temperature (their mean reward "
         "on the task's dev prompts) score 0 and 1; `overall` is the mean over tasks, each task weighted equally. "
         f"Intervals: paired bootstrap over prompts within each task ({report['n_boot']} resamples).", "",
         "Normalization: " + "; ".join(normalization_note(t, report["tasks"][t]["normalization"]) for t in tasks) + ".", "",
         head, rule]
    for m in report["methods"]:
        if m in skip_methods:
            continue
        r = report["normalized"][m]
        L.append(f"| {m} | " + " | ".join(_iv(r["tasks"][t]) for t in tasks) + f" | {_iv(r['overall'])} |")
    b = report["best_fixed"]
    L += ["", f"Best single fixed temperature (highest overall normalized reward on {b['chosen_on']}): `{b['name']}`.", "",
          "## Win rate vs each fixed temperature (95% CI)", "",
          "Per prompt, the method's reward against the fixed temperature's on the same prompt: a win counts 1, a tie "
          "1/2, a loss 0 (the paper's win rate); a task's win rate is the mean over its prompts, `overall` the mean "
          "over tasks.", "",
          "| method | vs | " + " | ".join(f"{t}" for t in tasks) + " | overall |", "|---|---|" + "---|" * (len(tasks) + 1)]
    for m, by_f in report["win_rates"].items():
        for f, w in by_f.items():
            if (m, f) in skip_pairs:
                continue
            L.append(f"| {m} | {f} | " + " | ".join(_iv(w["tasks"][t], pct=True) for t in tasks)
                     + f" | {_iv(w['overall'], pct=True)} |")
    for m, by_o in report.get("head_to_head", {}).items():
        rows = [o for o in by_o if o not in skip_methods]
        if not rows:
            continue
        L += ["", f"## {m} against the other methods (95% CI)", "",
              f"Normalized {m} minus the other method (tasks weighted equally) and {m}'s win rate against it, on the "
              "same paired draws as the bar; a tuned baseline (oracle, min-p per task) that a learned head does not "
              "beat is what a user could pick instead.", "",
              "| vs | its normalized reward | " + " | ".join(f"{t}: difference" for t in tasks)
              + " | overall difference | overall win rate |", "|---|---|" + "---|" * (len(tasks) + 2)]
        for o in rows:
            d, w = by_o[o]["difference"], by_o[o]["win_rate"]
            L.append(f"| {o} | {report['normalized'][o]['overall']['mean']:.3f} | "
                     + " | ".join(_iv(d["tasks"][t]) for t in tasks)
                     + f" | {_iv(d['overall'])} | {_iv(w['overall'], pct=True)} |")
    return L + [""]


def rival_line(report: dict, method: str, skip=()) -> str | None:
    """One line: `method` against its strongest rival (`strongest_rival`), or None."""
    r = strongest_rival(report, method, skip)
    if r is None:
        return None
    d = r["difference"]
    verdict = "ahead" if d["lo"] > 0 else ("behind" if d["hi"] < 0 else "not separated")
    return (f"{method} vs the strongest other method, {r['name']} (normalized {r['normalized']:.3f}): difference "
            f"{d['mean']:+.3f} [95% CI {d['lo']:+.3f}, {d['hi']:+.3f}], {verdict}; win rate {_iv(r['win_rate'], pct=True)}")


__all__ = ["BAR_RULE", "bar_line", "bar_numbers", "markdown_sections", "normalization_note", "rival_line"]
