"""The finished runs of a sweep, whatever their source, as `SweepRun`s (name, flattened config, final metrics,
logged history): local `metrics.jsonl` run directories, wandb offline run directories, or the wandb API.

Why our own reader beside the wandb API: clusters often run offline (WANDB_MODE=offline) and the LPO trainer
always writes `metrics.jsonl`, so a sweep is reportable without a wandb server."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..storage import read_jsonl_log


def is_number(v) -> bool:
    """A finite int or float (not a bool): a value a metric can be ranked and plotted by."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    summary = {k: v for k, v in summary.items() if not k.startswith("_") and is_number(v)}
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
