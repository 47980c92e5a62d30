"""Sweeps over LPO hyperparameters: expand a wandb sweep YAML the way `wandb agent` does, read the finished runs
(local `metrics.jsonl` run directories, wandb offline run directories, the wandb API), and write a report.

A run, whatever its source, becomes a `SweepRun`: a name, its (flattened) config, a summary of final metrics and
the logged history. `write_report` turns a list of them into `report.md` plus PNG plots: the metric per
hyperparameter, a grid heatmap (two swept parameters) or parallel coordinates (more), and the metric's curve per run.

Why our own reader instead of only the wandb API: clusters often run offline (WANDB_MODE=offline) and the LPO
trainer always writes `metrics.jsonl`, so a sweep is reportable without a wandb server.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..plotting import pyplot, save_figure
from ..storage import read_jsonl_log

__all__ = ["SweepRun", "agent_args", "expand_command", "flatten", "grid_points", "load_sweep", "read_local_runs",
           "read_runs", "read_wandb_api_runs", "read_wandb_offline_runs", "run_id_for", "summarize", "write_report"]

# ------------------------------------------------------------------------------------------------- sweep configs


def load_sweep(path) -> dict:
    """A wandb sweep YAML as a dict, checked for the keys the agent needs."""
    sweep = yaml.safe_load(Path(path).read_text())
    if not isinstance(sweep, dict):
        raise ValueError(f"{path}: a sweep config must be a YAML mapping")
    for key in ("program", "method", "parameters"):
        if key not in sweep:
            raise ValueError(f"{path}: sweep config has no {key!r}")
    for name, spec in sweep["parameters"].items():
        if not isinstance(spec, dict) or not ({"value", "values", "distribution", "min", "max"} & set(spec)):
            raise ValueError(f"{path}: parameter {name!r} needs value, values or a distribution, got {spec!r}")
    return sweep


def grid_points(sweep: dict) -> list[dict]:
    """Every parameter combination of a grid sweep, in wandb's order (cartesian product over `values`, the
    first parameter varying slowest); constants (`value`) are included in each point."""
    if sweep.get("method") != "grid":
        raise ValueError(f"only grid sweeps can be enumerated locally, this one is {sweep.get('method')!r}")
    names, choices = [], []
    for name, spec in sweep["parameters"].items():
        if "value" in spec:
            vals = [spec["value"]]
        elif "values" in spec:
            vals = list(spec["values"])
        else:
            raise ValueError(f"grid parameter {name!r} needs value or values (distributions need random/bayes)")
        names.append(name)
        choices.append(vals)
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def agent_args(params: dict) -> dict[str, list[str]]:
    """The argument macros `wandb agent` substitutes into a sweep command, formatted exactly as the agent does
    (wandb.sdk.launch.sweeps.utils.create_sweep_command_args): `--key=value` with Python's str(value)."""
    flags, no_hyphens, no_bool = [], [], []
    for k, v in params.items():
        flags.append(f"--{k}={v}")
        no_hyphens.append(f"{k}={v}")
        if isinstance(v, bool):
            if v:
                no_bool.append(f"--{k}")
        else:
            no_bool.append(f"--{k}={v}")
    return {"args": flags, "args_no_hyphens": no_hyphens, "args_no_boolean_flags": no_bool,
            "args_json": [json.dumps(params)]}


DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


def expand_command(sweep: dict, params: dict, interpreter: str = "python") -> list[str]:
    """The command line `wandb agent` would run for these parameters (its macros replaced the same way)."""
    macros = {"env": ["/usr/bin/env"], "interpreter": [interpreter], "program": [sweep["program"]], **agent_args(params)}
    out = []
    for chunk in sweep.get("command") or DEFAULT_COMMAND:
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}") and chunk[2:-1] in macros:
            out += macros[chunk[2:-1]]
        else:
            out.append(chunk)
    return out


def run_id_for(sweep_name: str, index: int) -> str:
    """A wandb-compatible run id for grid point `index` of a locally run sweep."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{sweep_name}-{index:03d}")


# ------------------------------------------------------------------------------------------------- runs
@dataclass
class SweepRun:
    name: str
    source: str                               # "local" | "wandb-offline" | "wandb-api"
    config: dict                              # flattened: {"beta": 0.1, "head.level": "token", ...}
    summary: dict = field(default_factory=dict)   # final value of every logged metric
    history: list[dict] = field(default_factory=list)  # logged rows (each with "step")
    path: str | None = None
    params: dict | None = None                # the swept parameters, when known (flattened)


def flatten(d: dict, prefix: str = "") -> dict:
    """{"head": {"level": "token"}} -> {"head.level": "token"}; lists become tuples (hashable, comparable)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _local_config(run_dir: Path) -> dict:
    """A run directory's config: a config file next to metrics.jsonl, else the newest checkpoint's record."""
    for name in ("config.json", "lpo_config.json", "run_config.json"):
        if (run_dir / name).exists():
            return json.loads((run_dir / name).read_text())
    for name in ("config.yaml", "lpo_config.yaml"):
        if (run_dir / name).exists():
            return yaml.safe_load((run_dir / name).read_text()) or {}
    states = sorted(run_dir.glob("checkpoints/step-*/trainer_state.json"))
    if states:
        return json.loads(states[-1].read_text()).get("config", {})
    return {}


def read_local_runs(root) -> list[SweepRun]:
    """Every run directory under `root` (or `root` itself) holding a metrics.jsonl."""
    root = Path(root)
    runs = []
    for mfile in sorted([root / "metrics.jsonl"] if (root / "metrics.jsonl").exists() else root.rglob("metrics.jsonl")):
        if "wandb" in mfile.parts:
            continue
        run_dir = mfile.parent
        rows = read_jsonl_log(mfile)  # a line torn by a kill: the run is incomplete, not unreadable
        history = [r for r in rows if not r.get("final")]
        summary = {}
        for r in history:
            summary.update({k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for r in rows:
            if r.get("final"):
                summary.update({f"final/{k}": v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        params = None
        if (run_dir / "sweep_params.json").exists():
            params = flatten(json.loads((run_dir / "sweep_params.json").read_text()))
        runs.append(SweepRun(name=run_dir.name, source="local", config=flatten(_local_config(run_dir)), summary=summary,
                             history=history, path=str(run_dir), params=params))
    return runs


def _wandb_records(run_file: Path):
    """Protobuf records of a .wandb transaction log. The file is a LevelDB-style log (7-byte ':W&B' header, 32 KiB
    blocks of chunks: crc32 u32, length u16, type u8 FULL=1/FIRST=2/MIDDLE=3/LAST=4); wandb >= 0.19 no longer
    ships a Python reader for it, so here is one (it stops at a torn tail, as wandb sync does)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(run_file).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{run_file}: not a wandb transaction log")
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if len(chunk) < length:
            break
        if kind in (1, 2):
            buf = chunk
        else:
            buf += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def _items(items) -> dict:
    out = {}
    for it in items:
        key = it.key or "/".join(it.nested_key)
        try:
            out[key] = json.loads(it.value_json)
        except json.JSONDecodeError:
            continue
    return out


def _read_wandb_file(run_file: Path) -> tuple[str | None, dict, dict, list[dict]]:
    """(run name, config, summary, history) of one offline run."""
    name, config, summary, history = None, {}, {}, []
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            name = rec.run.display_name or rec.run.run_id
            config.update(_items(rec.run.config.update))
        elif kind == "config":
            config.update(_items(rec.config.update))
        elif kind == "history":
            row = _items(rec.history.item)
            row.setdefault("step", row.get("_step"))
            history.append(row)
        elif kind == "summary":
            summary.update(_items(rec.summary.update))
    config = {k: (v.get("value") if isinstance(v, dict) and set(v) <= {"value", "desc"} else v)
              for k, v in config.items() if not k.startswith("_")}
    if not summary:
        for r in history:
            summary.update(r)
    summary = {k: v for k, v in summary.items() if not k.startswith("_") and _num(v)}
    return name, config, summary, history


def read_wandb_offline_runs(root) -> list[SweepRun]:
    """wandb offline run directories (offline-run-*/run-*.wandb) anywhere under `root`."""
    runs = []
    for run_file in sorted(Path(root).rglob("*.wandb")):
        if not re.match(r"^(offline-)?run-", run_file.parent.name):
            continue
        name, config, summary, history = _read_wandb_file(run_file)
        params = None
        sp = run_file.parent.parent.parent / "sweep_params.json"  # a local grid run: <run dir>/wandb/<run>/...
        if sp.exists():
            params = flatten(json.loads(sp.read_text()))
        runs.append(SweepRun(name=str(config.get("run_name") or name or run_file.stem), source="wandb-offline",
                             config=flatten(config), summary=summary, history=history, path=str(run_file.parent),
                             params=params))
    return runs


def read_wandb_api_runs(sweep_path: str, api=None) -> list[SweepRun]:
    """Runs of an online sweep ("entity/project/sweep_id") through the wandb public API."""
    if api is None:
        import wandb

        api = wandb.Api()
    sweep = api.sweep(sweep_path)
    names = set(sweep.config.get("parameters", {})) if getattr(sweep, "config", None) else set()
    runs = []
    for r in sweep.runs:
        config = {k: v for k, v in dict(r.config).items() if not k.startswith("_")}
        summary = {k: v for k, v in dict(r.summary).items() if isinstance(v, (int, float)) and not k.startswith("_")}
        history = [dict(h, step=h.get("_step")) for h in r.scan_history()]
        params = flatten({k: config[k] for k in names if k in config}) if names else None
        runs.append(SweepRun(name=r.name, source="wandb-api", config=flatten(config), summary=summary,
                             history=history, path=getattr(r, "url", None), params=params))
    return runs


def read_runs(paths, wandb_sweep: str | None = None, api=None) -> list[SweepRun]:
    """Local JSONL runs and wandb offline runs under each path (a wandb run inside a local run directory is the
    same run: the local one is kept), plus the runs of an online sweep."""
    runs: list[SweepRun] = []
    for p in paths:
        local = read_local_runs(p)
        local_dirs = [Path(r.path) for r in local]
        for w in read_wandb_offline_runs(p):
            if not any(d in Path(w.path).parents for d in local_dirs):
                local.append(w)
        runs += local
    if wandb_sweep:
        runs += read_wandb_api_runs(wandb_sweep, api=api)
    return runs


# ------------------------------------------------------------------------------------------------- analysis
def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    have = [r for r in runs if _num(r.summary.get(metric))]
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
    uniq = sorted({repr(v): v for v in values}.values(), key=lambda v: (not _num(v), v if _num(v) else repr(v)))
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
        pts = [(h["step"], h[metric]) for h in r.history if _num(h.get(metric)) and _num(h.get("step"))]
        if pts:
            ax.plot(*zip(*pts), label=r.name, lw=2 if r is s["best"] else 1)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric} during training", fontsize=10)
    return save_figure(fig, path, dpi=100)
