"""The package as a tool: a wheel built from this checkout, installed into a fresh virtualenv with --no-deps and
--no-index, runs the packaged positive-control experiment (`adaptive-decoder experiment --config control`, its
task files and data from the wheel) on a tiny random Llama from an empty directory.

The fresh virtualenv gets its dependencies (torch, transformers, ...) from the running environment's
site-packages through a `.pth` file written after the wheel is installed: that directory is then searched after
the virtualenv's own, and the .pth files inside it (the editable install of this checkout among them) are not
processed, so the only `adaptive_decoder` the command can import is the wheel's."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh virtualenv's directory, its environment variables) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # built from a copy: the build writes build/ and *.egg-info next to setup.py
    shutil.copytree(REPO / "adaptive_decoder", src / "adaptive_decoder",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    shutil.copy(REPO / "setup.py", src / "setup.py")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp / "dist", src])
    (wheel,) = (tmp / "dist").glob("adaptive_decoder-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    vpy = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", vpy, "install", "-q", "--no-deps", "--no-index", wheel])
    site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return venv, env


def test_the_wheel_ships_the_command_task_files_and_configs(installed):
    venv, env = installed
    empty = venv.parent / "empty-help"
    empty.mkdir()
    r = _run([venv / "bin" / "adaptive-decoder", "--help"], cwd=empty, env=env, timeout=120)
    for sub in ("collect", "train", "evaluate", "experiment", "headroom", "export"):
        assert f"    {sub}" in r.stdout
    code = ("import json, adaptive_decoder\n"
            "from adaptive_decoder.tasks.data_task import find_task_file\n"
            "from adaptive_decoder.cli import packaged_configs\n"
            "print(json.dumps({'file': adaptive_decoder.__file__, 'qa': str(find_task_file('control_qa')), "
            "'experiment': packaged_configs('experiment'), 'headroom': packaged_configs('headroom')}))")
    got = json.loads(_run([venv / "bin" / "python", "-c", code], cwd=empty, env=env, timeout=120).stdout)
    assert Path(got["file"]).resolve().is_relative_to(venv.resolve()), got["file"]  # the wheel, not this checkout
    assert Path(got["qa"]).resolve().is_relative_to(venv.resolve()), got["qa"]
    assert "control" in got["experiment"] and "control" in got["headroom"]


def test_installed_command_runs_the_packaged_control_experiment_from_an_empty_directory(installed, tiny_model_dir):
    venv, env = installed
    work = venv.parent / "empty"
    work.mkdir()
    cmd = [venv / "bin" / "adaptive-decoder", "experiment", "--config", "control", "--model", tiny_model_dir,
           "--run_dir", "run", "--torch_threads", "1", "--num_train", "4", "--num_dev", "2", "--num_test", "3",
           # the packaged tasks with their own rewards; a random model never scores on them: fluency gives the
           # rewards some spread, so that the collection has preference pairs
           "--tasks", json.dumps({"control_qa": {"reward": {"exact_match": {"mode": "contains"}, "fluency": {"weight": 0.1}}},
                                  "control_numbers": {"reward": {"distinct_valid": {"pattern": ".+"},
                                                                 "fluency": {"weight": 0.1}}}}),
           "--collect", json.dumps({"num_samples": 2, "epsilon": 0.3, "prompts_per_batch": 4, "twins": 1,
                                    "cache_budget_mb": 16}),
           "--lpo", json.dumps({"pair_mode": "top_k_vs_bottom_k", "pair_k": 1, "beta": 0.5, "learning_rate": 0.01,
                                "per_device_train_batch_size": 4, "num_train_epochs": 1, "logging_steps": 1,
                                "save_steps": 1000, "plot": False}),
           "--eval", json.dumps({"num_samples": 2, "batch_size": 4, "fluency": True, "fixed_top_k": 10}),
           "--methods", "greedy", "fixed", "oracle", "adaptive", "--n_bootstrap", "50", "--plots", "false"]
    r = _run(cmd, cwd=work, env=env, timeout=600)
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert (work / "run" / "summary.md").is_file()
    assert set(summary["scale_free"]["tasks"]) == {"control_qa", "control_numbers"}
    assert "BAR MET" in r.stdout or "BAR NOT MET" in r.stdout
    assert (work / "run" / "seed-0" / "train-sequence" / "head" / "model.safetensors").is_file()
