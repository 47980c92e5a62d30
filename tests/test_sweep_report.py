"""Sweeps: wandb-agent argument passing into the TrlParser recipe, a real local 2x2 LPO sweep, and its report.

The 2x2 sweep runs training/train_lpo.py four times through slurm/sweep_grid.py, i.e. with the exact command and
`--key=value` arguments `wandb agent` would use (configs/sweeps/lpo_tiny_grid.yaml, synthetic pairs, wandb
offline); the report is then built from the runs' metrics.jsonl AND from their wandb offline run files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from trl import TrlParser

from adaptive_decoder.lpo.trainer import LPOConfig
from adaptive_decoder.sweeps.runs import SweepRun, read_local_runs, read_runs, read_wandb_api_runs, read_wandb_offline_runs
from adaptive_decoder.sweeps.grid import agent_args, expand_command, grid_points, load_sweep
from adaptive_decoder.sweeps.report import summarize, write_report

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
TINY = str(REPO / "configs" / "lpo" / "train_tiny.yaml")


def _sample(spec):
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    return spec["min"]


def _parse(flags, tmp_path):
    (cfg,) = TrlParser((LPOConfig,)).parse_args_and_config(["--config", TINY, "--output_dir", str(tmp_path), *flags])
    return cfg


def test_agent_args_are_formatted_like_wandb_agent():
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    params = {"beta": 0.1, "learning_rate": 3e-4, "loss_type": "lpo", "plot": False, "head": {"level": "token"}}
    ours = agent_args(params)
    theirs = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    for key in ours:
        assert ours[key] == theirs[key], key


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_parameters_reach_the_recipe(path, tmp_path):
    """Every swept parameter is an LPOConfig field and, passed as the agent passes it, parses to its value."""
    sweep = load_sweep(path)
    assert (REPO / sweep["program"]).exists()
    fields = LPOConfig.__dataclass_fields__
    for name, spec in sweep["parameters"].items():
        assert name in fields, f"{path.name}: {name!r} is not an LPOConfig field"
        value = _sample(spec)
        flags = agent_args({name: value})["args"]
        cfg = _parse(flags, tmp_path)  # dict values (head specs) arrive as YAML text and are parsed
        assert getattr(cfg, name) == value, (name, getattr(cfg, name), value)
    # the command the agent would run: our program, the sweep's --key=value flags, each run its own output_dir
    cmd = expand_command(sweep, {k: _sample(s) for k, s in sweep["parameters"].items()})
    assert any(sweep["program"] in c for c in cmd) and "${WANDB_RUN_ID" in " ".join(cmd)


def test_unknown_sweep_parameter_is_named(tmp_path):
    """A sweep parameter the recipe does not know stops the run with an error naming it (in-process and as the
    agent's subprocess would see it)."""
    flags = agent_args({"beta": 0.2, "betta": 0.3})["args"]
    with pytest.raises(ValueError, match=r"--betta=0\.3"):
        _parse(flags, tmp_path)
    sweep = load_sweep(REPO / "configs" / "sweeps" / "lpo_tiny_grid.yaml")
    cmd = expand_command(sweep, {"beta": 0.2, "betta": 0.3}, interpreter=sys.executable)
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "WANDB_RUN_ID": "bad", "WANDB_MODE": "offline"})
    assert r.returncode != 0 and "--betta=0.3" in r.stderr and "--beta=0.2" not in r.stderr.split("--betta")[-1]
    assert not (REPO / "runs" / "sweeps" / "lpo_tiny_grid" / "bad" / "metrics.jsonl").exists()


def test_grid_points_follow_wandb_order_and_reject_distributions():
    sweep = load_sweep(REPO / "configs" / "sweeps" / "lpo_tiny_grid.yaml")
    pts = grid_points(sweep)
    assert pts == [{"beta": 0.1, "learning_rate": 0.001}, {"beta": 0.1, "learning_rate": 0.03},
                   {"beta": 1.0, "learning_rate": 0.001}, {"beta": 1.0, "learning_rate": 0.03}]
    with pytest.raises(ValueError, match="bayes"):
        grid_points(load_sweep(REPO / "configs" / "sweeps" / "lpo_smollm2_bayes.yaml"))
    bad = {"program": "x.py", "method": "grid", "parameters": {"beta": 0.1}}
    p = Path(os.environ.get("TMPDIR", "/tmp")) / "bad_sweep_ad.yaml"
    p.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="parameter 'beta'"):
        load_sweep(p)


# ------------------------------------------------------------------------------------------- real local sweep
@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "lpo_tiny_grid"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}

    def run(i):
        return subprocess.run([sys.executable, str(REPO / "slurm" / "sweep_grid.py"), str(REPO / "configs" / "sweeps" /
                               "lpo_tiny_grid.yaml"), "--index", str(i), "--run", "--output_root", str(root), "--",
                               "--progress", "false"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(run, range(4)))
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    return root


def _final_loss(run_dir: Path) -> float:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r][-1]["loss"]


def test_local_2x2_sweep_report(sweep_dir, tmp_path):
    runs = read_runs([sweep_dir])
    assert len(runs) == 4 and {r.source for r in runs} == {"local"}  # wandb copies inside run dirs count once
    by_params = {(r.params["beta"], r.params["learning_rate"]): r for r in runs}
    assert set(by_params) == {(0.1, 0.001), (0.1, 0.03), (1.0, 0.001), (1.0, 0.03)}
    for (beta, lr), r in by_params.items():  # the recipe really received the agent's values
        assert r.config["beta"] == beta and r.config["learning_rate"] == lr
        assert r.summary["loss"] == _final_loss(Path(r.path))

    # the wandb offline run files hold the same runs, configs and final losses
    wb = {r.name: r for r in read_wandb_offline_runs(sweep_dir)}
    assert len(wb) == 4
    for r in runs:
        w = wb[r.name]
        assert w.config["beta"] == r.config["beta"] and w.summary["loss"] == pytest.approx(r.summary["loss"])
        assert [h["step"] for h in w.history] == [h["step"] for h in r.history]

    out = tmp_path / "report"
    summary = write_report(runs, out, metric="loss", goal="minimize")
    best = min(runs, key=lambda r: r.summary["loss"])
    assert summary["best"]["name"] == best.name and summary["params"] == ["beta", "learning_rate"]
    md = (out / "report.md").read_text()
    assert f"**Best run: `{best.name}`**" in md and "### `learning_rate`" in md
    for png in ("metric_per_param.png", "grid.png", "parallel_coordinates.png", "curves.png"):
        assert (out / png).stat().st_size > 5000 and f"({png})" in md
    # 24 steps at lr 0.03 fit the separable synthetic pairs far better than at lr 0.001, at either beta
    per_lr = summarize(runs, "loss")["per_param"]["learning_rate"]
    assert per_lr["0.03"]["mean"] < per_lr["0.001"]["mean"]

    cli = subprocess.run([sys.executable, str(REPO / "eval" / "sweep_report.py"), str(sweep_dir), "--metric",
                          "rewards/accuracies", "--goal", "maximize", "-o", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "best" in cli.stdout and (tmp_path / "cli" / "report.md").exists()
    bad = subprocess.run([sys.executable, str(REPO / "eval" / "sweep_report.py"), str(sweep_dir), "--metric", "lossy"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "'lossy' is in no run's summary" in bad.stderr and "loss" in bad.stderr


def test_wandb_only_runs_are_reported(sweep_dir, tmp_path):
    """A directory with only wandb offline runs (no metrics.jsonl) still makes a report."""
    import shutil

    for r in read_wandb_offline_runs(sweep_dir):
        shutil.copytree(r.path, tmp_path / "wandb_only" / Path(r.path).name)
    runs = read_runs([tmp_path / "wandb_only"])
    assert len(runs) == 4 and {r.source for r in runs} == {"wandb-offline"}
    s = write_report(runs, tmp_path / "rep", metric="loss")
    assert set(s["params"]) >= {"beta", "learning_rate"}  # found as the keys that differ between runs


def test_wandb_api_runs_and_errors(tmp_path):
    class FakeRun:
        def __init__(self, name, beta, loss):
            self.name, self.url = name, f"https://wandb.ai/x/{name}"
            self.config = {"beta": beta, "learning_rate": 1e-3, "_wandb": {}}
            self.summary = {"loss": loss, "_runtime": 3}

        def scan_history(self):
            return [{"_step": 1, "loss": self.summary["loss"] + 1}, {"_step": 2, "loss": self.summary["loss"]}]

    class FakeApi:
        def sweep(self, path):
            assert path == "e/p/s1"
            return type("S", (), {"config": {"parameters": {"beta": {}}},
                                  "runs": [FakeRun("a", 0.1, 0.5), FakeRun("b", 0.5, 0.2)]})()

    runs = read_wandb_api_runs("e/p/s1", api=FakeApi())
    assert [r.params for r in runs] == [{"beta": 0.1}, {"beta": 0.5}] and runs[1].history[-1]["step"] == 2
    s = write_report(runs, tmp_path, metric="loss")
    assert s["best"]["name"] == "b" and s["params"] == ["beta"]
    with pytest.raises(ValueError, match="no runs"):
        summarize([], "loss")
    with pytest.raises(ValueError, match="goal"):
        summarize(runs, "loss", goal="lowest")
    (tmp_path / "nothing_here").mkdir()
    assert read_local_runs(tmp_path / "nothing_here") == []
    assert all(isinstance(r, SweepRun) and r.source == "wandb-api" for r in runs)
