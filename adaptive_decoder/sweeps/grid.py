"""A wandb sweep YAML expanded the way `wandb agent` does: its grid points, each point's command line and run id,
so a grid runs as a Slurm array (slurm/sweep_grid.py) without a wandb server."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import yaml




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
