"""Plots of a run's results: reward against the fixed temperatures, the values each adaptive method chose, and
the experiment's paired differences in normalized reward.

Like the markdown, they read only the results dicts; `results_plots` draws the suite's, `summary_plots` the
experiment's (the same two plots over the seeds' aggregate, plus the differences).
"""

from __future__ import annotations

from pathlib import Path

from ...modeling.head import FACTORS
from ...plotting import pyplot, save_figure
from ...methods.base import FIXED_CONFIG_ROLES, role_of
from ..results import FALLBACK, OVERALL, value_key, value_order


def _reward_names(results: dict) -> dict:
    """{task: what its reward is}, from the reward spec each task recorded (empty where none was recorded)."""
    out = {}
    for t, tr in results["tasks"].items():
        spec = tr.get("reward")
        if isinstance(spec, dict) and spec:
            out[t] = " + ".join(f"{(o or {}).get('weight', 1):g}·{k}" if (o or {}).get("weight", 1) != 1 else k
                                for k, o in spec.items())
    return out


def plot_reward_vs_temperature(results: dict, path: Path) -> Path | None:
    """Per task: mean reward (95% CI bars) of each fixed temperature, and each other method as one point with its
    CI bar to the right of the grid (a dotted line at its mean), so that the CIs can be compared without bands
    covering each other. One legend, outside the panels."""
    plt = pyplot()

    tasks = list(results["tasks"])
    fixed = [(n, d["temperature"]) for n, d in results["methods"].items() if role_of(d) == "fixed"]
    others = [n for n, d in results["methods"].items() if role_of(d) != "fixed"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.8 * len(tasks) + 2.2, 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = [temp for _, temp in fixed] or [0.0, 1.0]
    span = (max(xs) - min(xs)) or 1.0
    markers = ["s", "D", "^", "v", "P", "X", "*", "<", ">"]
    handles = {}
    for ax, t in zip(axes[0], tasks):
        ms = results["tasks"][t]["methods"]
        if fixed:
            ys = [ms[n]["reward"]["mean"] for n, _ in fixed]
            err = [[y - ms[n]["reward"]["lo"] for (n, _), y in zip(fixed, ys)],
                   [ms[n]["reward"]["hi"] - y for (n, _), y in zip(fixed, ys)]]
            handles["fixed temperature"] = ax.errorbar([temp for _, temp in fixed], ys, yerr=err, marker="o",
                                                       color="black", capsize=3)
        for i, n in enumerate(n for n in others if n in ms):
            r, c = ms[n]["reward"], colors[i % len(colors)]
            x = max(xs) + span * (0.12 + 0.07 * i)
            ax.axhline(r["mean"], color=c, ls=":", lw=1)
            handles[n] = ax.errorbar([x], [r["mean"]], yerr=[[r["mean"] - r["lo"]], [r["hi"] - r["mean"]]],
                                     marker=markers[i % len(markers)], color=c, capsize=3, ls="none")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_title(t + (f"\nreward: {_reward_names(results)[t]}" if t in _reward_names(results) else ""), fontsize=9)
        ax.set_xlabel("fixed temperature (other methods to the right)")
        ax.set_ylabel("mean reward per prompt (95% CI)")
    model = results.get("model") or results.get("config", {}).get("model", "")
    run = results.get("run_name") or results.get("config", {}).get("run_name") or ""
    fig.suptitle(f"Reward vs temperature: {model}" + (f", {run}" if run else ""), fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(0.995, 0.5), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def _varied_factors(results: dict, methods: list) -> list:
    """The factors some method chose (a head's own factors, or any factor that took more than one value; a HAG
    fallback is not a value)."""
    factors = list(FACTORS)
    chosen = {f for m in methods for f in results["methods"][m].get("factors", [])}
    for f in factors:
        seen = {v for tr in results["tasks"].values() for m in methods
                for v in tr["methods"].get(m, {}).get("chosen", {}).get(f, {})}
        if len(seen - {FALLBACK}) > 1:
            chosen.add(f)
    return [f for f in factors if f in chosen] or ["temperature"]


def _value_axis(results: dict, methods: list, factor: str) -> list:
    """One factor's categories: every bin a method could choose (from its description) and every value one did
    choose, ascending; FALLBACK last."""
    vals = {value_key(x) for m in methods for x in (results["methods"][m].get("bins") or {}).get(factor, [])}
    vals |= {v for tr in results["tasks"].values() for m in methods
             for v in tr["methods"].get(m, {}).get("chosen", {}).get(factor, {})}
    return sorted(vals, key=value_order)


def plot_chosen_params(results: dict, path: Path) -> Path | None:
    """Distribution of the temperature / top-p / top-k each adaptive method chose, per task (the paper's Fig. 4):
    grouped bars of the share of decisions (sequence level: samples; token level: generated tokens) per value.

    Only factors that some method chose are drawn, and each factor has one categorical axis (every bin a method
    could choose, and every value one chose) in all rows, so that panels can be compared by eye; a value a method
    never chose is an empty slot. HAG's parse-failure fallbacks are a hatched bar apart, right of a dotted line."""
    adaptive = [n for n, d in results["methods"].items() if role_of(d) not in FIXED_CONFIG_ROLES]
    if not adaptive:
        return None
    plt = pyplot()

    tasks = list(results["tasks"])
    factors = _varied_factors(results, adaptive)
    axis = {f: _value_axis(results, adaptive, f) for f in factors}
    fig, axes = plt.subplots(len(tasks), len(factors), figsize=(4.2 * len(factors) + 1.5, 2.6 * len(tasks)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / len(adaptive)
    for r, t in enumerate(tasks):
        for c, f in enumerate(factors):
            ax, vals = axes[r][c], axis[f]
            # the fallback slot sits half a slot further right, past a dotted separator
            pos = [j + (0.5 if v == FALLBACK else 0.0) for j, v in enumerate(vals)]
            for i, m in enumerate(adaptive):
                counts = results["tasks"][t]["methods"].get(m, {}).get("chosen", {}).get(f, {})
                tot = sum(counts.values()) or 1
                ax.bar([x + i * width for x in pos], [counts.get(v, 0) / tot for v in vals], width,
                       color=colors[i % len(colors)], hatch=["//" if v == FALLBACK else "" for v in vals],
                       edgecolor="white", label=m if (r, c) == (0, 0) else None)
            if FALLBACK in vals:
                ax.axvline(pos[vals.index(FALLBACK)] - 0.35, color="gray", ls=":", lw=1)
            ax.set_xticks([x + 0.4 - width / 2 for x in pos],
                          ["parse\nfailed" if v == FALLBACK else v for v in vals], fontsize=8)
            ax.set_title(f"{t}", fontsize=9)
            ax.set_xlabel(f"{f} chosen")
            ax.set_ylim(0, 1)
            if c == 0:
                ax.set_ylabel("share of decisions")
    fig.suptitle("What each adaptive method chose, per task", fontsize=11)
    fig.legend(loc="center left", bbox_to_anchor=(0.995, 0.5), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def _plot_results_view(summary: dict) -> dict:
    """The aggregated summary in the shape `adaptive_decoder.evaluation.harness`'s plotting functions read."""
    return {"methods": summary["methods"],
            "tasks": {t: {"methods": {m: {"reward": r["reward"], "chosen": r.get("chosen", {})}
                                      for m, r in tr["methods"].items()}} for t, tr in summary["tasks"].items()}}


def difference_rows(summary: dict) -> list[tuple]:
    """(method, fixed, overall normalized difference interval, is the bar's comparison) for the plot, without a
    method's comparison with the fixed setting it equals (greedy vs T=0.0: zero by construction)."""
    twins = summary.get("same_decoding", {})
    bar_pairs = {(b["method"], b["baseline"]) for b in summary.get("bars", {}).values() if b.get("evaluated")}
    return [(m, f, d["overall"], (m, f) in bar_pairs) for m, by_f in summary["scale_free"]["differences"].items()
            for f, d in by_f.items() if twins.get(m) != f]


def plot_paired_differences(summary: dict, path: Path) -> Path | None:
    """Normalized-reward difference (95% paired CI) of each non-fixed method vs each fixed temperature: overall
    (tasks weighted equally) in the first panel, then one panel per task on the same rows; the bar's comparisons
    highlighted; a method's comparison with the fixed setting it equals (greedy vs T=0.0) is left out, being zero
    by construction."""
    plt = pyplot()

    rows = difference_rows(summary)
    if not rows:
        return None
    diffs = summary["scale_free"]["differences"]
    tasks = list(summary["scale_free"]["tasks"])
    panels = [("overall (tasks weighted equally)", lambda m, f, iv: iv)] + [
        (t, lambda m, f, iv, t=t: diffs[m][f]["tasks"].get(t)) for t in tasks]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 + 2.6 * (len(panels) - 1), 1.5 + 0.42 * len(rows)),
                             sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(m for m, *_ in rows))
    ys, y, last = [], 0.0, None
    for m, *_ in rows:
        if last is not None and m != last:
            y -= 0.5  # a gap between methods
        last = m
        ys.append(y)
        y -= 1
    for ax, (title, get) in zip(axes[0], panels):
        for (m, f, iv, is_bar), y in zip(rows, ys):
            iv = get(m, f, iv)
            if is_bar:
                ax.axhspan(y - 0.45, y + 0.45, color="gold", alpha=0.35, lw=0)
            if not iv or iv.get("mean") is None:
                continue
            ax.errorbar([iv["mean"]], [y], xerr=[[iv["mean"] - iv["lo"]], [iv["hi"] - iv["mean"]]],
                        fmt="D" if is_bar else "o", color=colors[methods.index(m) % len(colors)],
                        capsize=4 if is_bar else 3, ms=7 if is_bar else 5, elinewidth=2.2 if is_bar else 1.2)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=9)
    ax0 = axes[0][0]
    ax0.set_yticks(ys, [f"{m} − {f}" + ("  (the bar)" if is_bar else "") for m, f, _, is_bar in rows], fontsize=7)
    for t in ax0.get_yticklabels():
        if t.get_text().endswith("(the bar)"):
            t.set_fontweight("bold")
    fig.supxlabel("difference in normalized reward, method − fixed temperature (95% paired bootstrap CI)", fontsize=9)
    best = summary["scale_free"]["best_fixed"]
    fig.suptitle(f"Normalized reward: each method minus each fixed temperature\nhighlighted: the bar's comparison, "
                 f"with {best['name']}, the best single fixed temperature on {best['chosen_on']}", fontsize=10)
    return save_figure(fig, path, dpi=110)


def results_plots(results: dict, out_dir) -> list[Path]:
    """The suite's plots in `out_dir`: reward_vs_temperature.png, and chosen_params.png when a method chose values."""
    out_dir = Path(out_dir)
    return [p for p in (plot_reward_vs_temperature(results, out_dir / "reward_vs_temperature.png"),
                        plot_chosen_params(results, out_dir / "chosen_params.png")) if p is not None]


def summary_plots(summary: dict, root) -> list[str]:
    """The experiment's plots in `root`: reward_vs_temperature.png (with the overall row), learned_params.png (per
    task only: overall mixes tasks) and paired_differences.png; the paths of those drawn."""
    root = Path(root)
    view = _plot_results_view(summary)
    per_task = {**view, "tasks": {t: d for t, d in view["tasks"].items() if t != OVERALL}}
    paths = [plot_reward_vs_temperature(view, root / "reward_vs_temperature.png"),
             plot_chosen_params(per_task, root / "learned_params.png"),
             plot_paired_differences(summary, root / "paired_differences.png")]
    return [str(p) for p in paths if p is not None]
