"""The report of a sweep over LPO hyperparameters: `write_report` turns its runs (`sweeps.runs.read_runs`) into
`report.md` plus PNG plots: the metric per hyperparameter, a grid heatmap (two swept parameters) or parallel
coordinates (more), and the metric's curve per run. Expanding the sweep itself: `sweeps.grid`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..plotting import pyplot, save_figure
from .runs import SweepRun, is_number


# ------------------------------------------------------------------------------------------------- analysis
def swept_parameters(runs: list[SweepRun]) -> list[str]:
    """The parameters that differ between runs (or those declared swept); bookkeeping keys are ignored."""
    declared = sorted({k for r in runs if r.params for k in r.params})
    if declared:
        return declared
    ignore = {"output_dir", "run_name", "collection_dir", "resume", "overwrite_output_dir", "progress", "plot"}
    keys = sorted({k for r in runs for k in r.config} - ignore)
    return [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]


def summarize(runs: list[SweepRun], metric: str, goal: str = "minimize") -> dict:
    """Best run, ranking and per-parameter mean of `metric` (runs without it are listed as missing)."""
    if goal not in ("minimize", "maximize"):
        raise ValueError(f"goal must be minimize or maximize, got {goal!r}")
    if not runs:
        raise ValueError("no runs found")
    have = [r for r in runs if is_number(r.summary.get(metric))]
    if not have:
        known = sorted({k for r in runs for k in r.summary})
        raise ValueError(f"metric {metric!r} is in no run's summary; available: {known}")
    ranked = sorted(have, key=lambda r: r.summary[metric], reverse=goal == "maximize")
    params = swept_parameters(runs)
    per_param = {}
    for p in params:
        groups: dict[str, list[float]] = {}
        for r in have:
            groups.setdefault(repr(_pval(r, p)), []).append(r.summary[metric])
        per_param[p] = {k: {"mean": sum(v) / len(v), "min": min(v), "max": max(v), "n": len(v)} for k, v in groups.items()}
    return {"metric": metric, "goal": goal, "params": params, "ranked": ranked, "best": ranked[0],
            "missing": [r for r in runs if r not in have], "per_param": per_param}


def _pval(run: SweepRun, p: str):
    return (run.params or {}).get(p, run.config.get(p))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


# ------------------------------------------------------------------------------------------------- report
def write_report(runs: list[SweepRun], out_dir, metric: str = "loss", goal: str = "minimize",
                 title: str = "Sweep report") -> dict:
    """report.md + metric_per_param.png + (grid.png | parallel_coordinates.png) + curves.png in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(runs, metric, goal)
    params = s["params"]
    files = {"metric_per_param": _plot_per_param(s, out / "metric_per_param.png")}
    if len(params) == 2:
        files["grid"] = _plot_grid(s, out / "grid.png")
    if len(params) >= 2:
        files["parallel_coordinates"] = _plot_parallel(s, out / "parallel_coordinates.png")
    if any(metric in h for r in s["ranked"] for h in r.history):
        files["curves"] = _plot_curves(s, out / "curves.png")

    best = s["best"]
    lines = [f"# {title}", "", f"{len(runs)} runs ({', '.join(sorted({r.source for r in runs}))}); metric "
             f"`{metric}` ({goal}); swept: {', '.join(f'`{p}`' for p in params) or 'nothing varies'}.", "",
             f"**Best run: `{best.name}`** with {metric} = {_fmt(best.summary[metric])}"
             + (" (" + ", ".join(f"{p}={_fmt(_pval(best, p))}" for p in params) + ")" if params else "") + ".", "",
             "## Runs", "", "| rank | run | " + " | ".join(params) + f" | {metric} |",
             "|---|---|" + "---|" * len(params) + "---|"]
    for i, r in enumerate(s["ranked"], 1):
        lines.append(f"| {i} | {r.name} | " + " | ".join(_fmt(_pval(r, p)) for p in params) + f" | {_fmt(r.summary[metric])} |")
    for r in s["missing"]:
        lines.append(f"| - | {r.name} | " + " | ".join(_fmt(_pval(r, p)) for p in params) + " | (missing: unfinished?) |")
    lines += ["", "## Metric per hyperparameter", ""]
    for p, groups in s["per_param"].items():
        lines += [f"### `{p}`", "", f"| value | mean {metric} | min | max | runs |", "|---|---|---|---|---|"]
        for v, g in sorted(groups.items(), key=lambda kv: kv[1]["mean"], reverse=goal == "maximize"):
            lines.append(f"| {v} | {_fmt(g['mean'])} | {_fmt(g['min'])} | {_fmt(g['max'])} | {g['n']} |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{k}]({Path(v).name})" for k, v in files.items() if v] + [""]
    (out / "report.md").write_text("\n".join(lines))
    summary = {"metric": metric, "goal": goal, "params": params, "best": {"name": best.name, metric: best.summary[metric],
               "params": {p: _pval(best, p) for p in params}, "path": best.path},
               "runs": [{"name": r.name, "source": r.source, metric: r.summary.get(metric),
                         "params": {p: _pval(r, p) for p in params}, "path": r.path} for r in runs],
               "files": {k: str(v) for k, v in files.items() if v}}
    (out / "report.json").write_text(json.dumps(summary, indent=1, default=list))
    return summary


def _positions(values):
    """x positions for parameter values: numeric values keep their order (log scale handled by caller)."""
    uniq = sorted({repr(v): v for v in values}.values(), key=lambda v: (not is_number(v), v if is_number(v) else repr(v)))
    return {repr(v): i for i, v in enumerate(uniq)}, uniq


def _plot_per_param(s, path):
    plt = pyplot()
    params = s["params"] or ["(run)"]
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.2), squeeze=False)
    metric = s["metric"]
    for ax, p in zip(axes[0], params):
        vals = [(_pval(r, p) if p != "(run)" else r.name) for r in s["ranked"]]
        pos, uniq = _positions(vals)
        xs = [pos[repr(v)] for v in vals]
        ys = [r.summary[metric] for r in s["ranked"]]
        ax.scatter(xs, ys, alpha=0.7)
        means = [sum(y for x, y in zip(xs, ys) if x == i) / max(1, xs.count(i)) for i in range(len(uniq))]
        ax.plot(range(len(uniq)), means, color="tab:red", marker="_", markersize=18, linestyle="-", alpha=0.6, label="mean")
        ax.set_xticks(range(len(uniq)))
        ax.set_xticklabels([_fmt(u) for u in uniq], rotation=30, fontsize=8)
        ax.set_title(p, fontsize=10)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{metric} per hyperparameter ({s['goal']})", fontsize=10)
    return save_figure(fig, path, dpi=100)


def _plot_grid(s, path):
    plt = pyplot()
    (pa, pb), metric = s["params"], s["metric"]
    pos_a, ua = _positions([_pval(r, pa) for r in s["ranked"]])
    pos_b, ub = _positions([_pval(r, pb) for r in s["ranked"]])
    grid = [[float("nan")] * len(ub) for _ in ua]
    for r in s["ranked"]:
        i, j = pos_a[repr(_pval(r, pa))], pos_b[repr(_pval(r, pb))]
        if math.isnan(grid[i][j]):
            grid[i][j] = r.summary[metric]
    fig, ax = plt.subplots(figsize=(1.6 * len(ub) + 2.5, 1.2 * len(ua) + 1.8))
    im = ax.imshow(grid, cmap="viridis_r" if s["goal"] == "minimize" else "viridis", aspect="auto")
    vals = [v for row in grid for v in row if not math.isnan(v)]
    lo, hi = min(vals), max(vals)
    for i in range(len(ua)):
        for j in range(len(ub)):
            if not math.isnan(grid[i][j]):
                t = (grid[i][j] - lo) / ((hi - lo) or 1.0)
                light = t < 0.5 if s["goal"] == "minimize" else t > 0.5  # the yellow end of viridis
                ax.text(j, i, f"{grid[i][j]:.3g}", ha="center", va="center", color="k" if light else "w", fontsize=9)
    ax.set_xticks(range(len(ub)))
    ax.set_xticklabels([_fmt(u) for u in ub])
    ax.set_yticks(range(len(ua)))
    ax.set_yticklabels([_fmt(u) for u in ua])
    ax.set_xlabel(pb)
    ax.set_ylabel(pa)
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(f"{metric} over the {pa} x {pb} grid", fontsize=10)
    return save_figure(fig, path, dpi=100)


def _plot_parallel(s, path):
    """Parallel coordinates: one vertical axis per parameter (values spread evenly) and the metric last; one line
    per run, coloured by the metric."""
    plt = pyplot()
    params, metric, runs = s["params"], s["metric"], s["ranked"]
    cols = []
    for p in params:
        pos, uniq = _positions([_pval(r, p) for r in runs])
        n = max(len(uniq) - 1, 1)
        cols.append(([pos[repr(_pval(r, p))] / n for r in runs], [_fmt(u) for u in uniq]))
    ys = [r.summary[metric] for r in runs]
    lo, hi = min(ys), max(ys)
    cols.append(([(y - lo) / ((hi - lo) or 1.0) for y in ys], [_fmt(lo), _fmt(hi)]))
    cmap = plt.get_cmap("viridis_r" if s["goal"] == "minimize" else "viridis")
    fig, ax = plt.subplots(figsize=(2.2 * len(cols) + 1, 3.6))
    for k, r in enumerate(runs):
        c = cmap((ys[k] - lo) / ((hi - lo) or 1.0))
        ax.plot(range(len(cols)), [col[0][k] for col in cols], color=c, alpha=0.8, lw=2 if k == 0 else 1)
    for x, (_, labels) in enumerate(cols):
        ax.axvline(x, color="k", lw=0.8)
        ticks = [i / max(len(labels) - 1, 1) for i in range(len(labels))]
        for t, lab in zip(ticks, labels):
            ax.text(x + 0.03, t, lab, fontsize=8, va="center")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(params + [metric], fontsize=9)
    ax.set_yticks([])
    ax.set_title(f"parallel coordinates (thick line: best run {runs[0].name})", fontsize=10)
    return save_figure(fig, path, dpi=100)


def _plot_curves(s, path):
    plt = pyplot()
    metric = s["metric"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for r in s["ranked"]:
        pts = [(h["step"], h[metric]) for h in r.history if is_number(h.get(metric)) and is_number(h.get("step"))]
        if pts:
            ax.plot(*zip(*pts), label=r.name, lw=2 if r is s["best"] else 1)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric} during training", fontsize=10)
    return save_figure(fig, path, dpi=100)
