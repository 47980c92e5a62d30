"""The project's sbatch scripts on a real single-node Slurm cluster started on this machine.

Opt-in (CI sets it): ADAPTIVE_DECODER_SLURM_TEST=1. Needs slurmctld, slurmd, munged (Debian: slurm-wlm munge).
slurm/local_cluster.sh writes slurm.conf/cgroup.conf under a temp dir, starts its own munged + slurmctld + slurmd
on 127.0.0.1 and free ports, and the fixture stops exactly those PIDs at the end.

What runs, all on CPU with the scripts' GPU defaults overridden (--gpus-per-node=0, 2 CPUs, gloo):
  collect.sbatch -> train_lpo.sbatch (2 processes, DDP over gloo, afterok dependency) -> eval_suite.sbatch with
  the trained head; then the two ways a job is interrupted: the time-limit warning (USR1 -> the script requeues
  itself) and scancel + resubmission into the same run directory. Both must resume from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "slurm"
BINARIES = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged")


def _missing_binaries():
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


if os.environ.get("ADAPTIVE_DECODER_SLURM_TEST") != "1":
    pytest.skip("real-Slurm test is opt-in: set ADAPTIVE_DECODER_SLURM_TEST=1", allow_module_level=True)
if _missing_binaries():
    pytest.skip(f"Slurm/munge binaries not found: {_missing_binaries()} (apt-get install slurm-wlm munge)",
                allow_module_level=True)


# ---------------------------------------------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin", "CPUS": "2"}
    start = subprocess.run(["bash", str(SLURM / "local_cluster.sh"), "start", str(d)], env=env,
                           capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, f"cluster did not start:\n{start.stdout}\n{start.stderr}\n{_logs(d)}"
        env["SLURM_CONF"] = str(d / "etc" / "slurm.conf")
        yield {"dir": d, "env": env}
    finally:
        stop = subprocess.run(["bash", str(SLURM / "local_cluster.sh"), "stop", str(d)], env=env,
                              capture_output=True, text=True, timeout=120)
        pids = [ln.split() for ln in stop.stdout.splitlines() if ln.startswith("stopped")]
        for _, name, _, pid in pids:  # "stopped munged (pid 123)": each recorded daemon is gone
            assert not Path(f"/proc/{pid.rstrip(')')}").exists(), f"{name} still running after stop"


def _logs(d: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((d / "log").glob("*")) if p.is_file())


def sh(cluster, *cmd, **kw) -> str:
    r = subprocess.run(list(cmd), env={**cluster["env"], **kw.pop("env", {})}, capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, f"{cmd} failed: {r.stdout}\n{r.stderr}"
    return r.stdout.strip()


CPU = ["--gpus-per-node=0", "--cpus-per-task=2", "--time=10"]


def submit(cluster, script, run_dir, recipe_args, sbatch_opts=(), **env) -> str:
    env = {"PYTHON": sys.executable, "RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1", **env}
    out = sh(cluster, "bash", str(SLURM / "submit.sh"), str(SLURM / script), *CPU, *sbatch_opts, "--",
             *recipe_args, env=env)
    job, rdir = out.split()
    assert Path(rdir) == Path(run_dir).resolve()
    return job


def job_info(cluster, job) -> dict:
    out = sh(cluster, "scontrol", "show", "job", "-o", job)
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def wait_done(cluster, job, run_dir, timeout=400) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = job_info(cluster, job)
        if info["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return info
        time.sleep(1)
    pytest.fail(f"job {job} not done after {timeout}s: {job_info(cluster, job)}\n{job_log(run_dir)}")


def job_log(run_dir) -> str:
    return "\n".join(p.read_text() for p in sorted(Path(run_dir, "logs").glob("*.out")))


def assert_completed(info, run_dir):
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{job_log(run_dir)[-6000:]}"


def wait_for(pred, what, timeout, run_dir, cluster=None, job=None):
    """Poll pred(); fail early (with the job's log) if the job ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        if job and job_info(cluster, job)["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            pytest.fail(f"job {job} ended while waiting for {what}: {job_info(cluster, job)}\n{job_log(run_dir)[-8000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}\n{job_log(run_dir)[-8000:]}")


# ---------------------------------------------------------------------------------------------------- tests
def test_cluster_is_ours_and_single_node(cluster):
    conf = (cluster["dir"] / "etc" / "slurm.conf").read_text()
    for line in ("ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres"):
        assert line in conf
    assert "(127.0.0.1)" in conf and "CgroupPlugin=cgroup/v1" in (cluster["dir"] / "etc" / "cgroup.conf").read_text()
    nodes = sh(cluster, "sinfo", "-h", "-N", "-o", "%N %c %t").split("\n")
    assert len(nodes) == 1 and nodes[0].split()[1:] == ["2", "idle"]


def test_collect_train_eval_pipeline(cluster, tiny_model_dir, tmp_path):
    """collect -> LPO on 2 gloo processes -> eval with the trained head, chained with afterok dependencies."""
    runs = tmp_path / "runs"
    collect = submit(cluster, "collect.sbatch", runs / "collect",
                     ["--config", "configs/lpo/collect_tiny.yaml", "--base_model", str(tiny_model_dir)])
    # LPO on the collection: the tiny training config minus its synthetic-data and head-bin settings
    train_cfg = yaml.safe_load((REPO / "configs/lpo/train_tiny.yaml").read_text())
    for k in ("synthetic_pairs", "synthetic_hidden_size"):
        train_cfg.pop(k)
    train_cfg.update(head={"num_layers": 2, "intermediate_size": 16}, collection_dir=str(runs / "collect" / "out"))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train_cfg))
    lpo = submit(cluster, "train_lpo.sbatch", runs / "lpo", ["--config", str(tmp_path / "train.yaml"), "--report_to", "none"],
                 [f"--dependency=afterok:{collect}"], NPROC_PER_NODE="2",
                 ACCELERATE_CONFIG="configs/accelerate/cpu_ddp.yaml")
    head = runs / "lpo" / "out" / "head"
    ev = submit(cluster, "eval_suite.sbatch", runs / "eval",
                ["--config", "configs/eval/tiny.yaml", "--model", str(tiny_model_dir), "--tasks", "{gsm8k: {}}",
                 "--methods", "greedy", "adaptive", "--head_paths", str(head), "--num_prompts", "2",
                 "--num_dev_prompts", "0", "--max_new_tokens", "6", "--report_to", "none"],
                 [f"--dependency=afterok:{lpo}"])

    assert_completed(wait_done(cluster, collect, runs / "collect"), runs / "collect")
    manifest = json.loads((runs / "collect" / "out" / "manifest.json").read_text())
    assert len(manifest["done"]) == 10  # 6 arithmetic + 4 echo prompts of collect_tiny.yaml

    assert_completed(wait_done(cluster, lpo, runs / "lpo"), runs / "lpo")
    log = job_log(runs / "lpo")
    assert "1 node(s) x 2 process(es)" in log
    assert (head / "model.safetensors").exists() and (head / "config.json").exists()
    final = [json.loads(ln) for ln in (runs / "lpo" / "out" / "metrics.jsonl").read_text().splitlines() if "final" in ln]
    assert final and final[-1]["num_processes"] == 2 and final[-1]["ranks_agree"] is True
    assert json.loads((head / "config.json").read_text())["hidden_size"] == 32

    assert_completed(wait_done(cluster, ev, runs / "eval"), runs / "eval")
    res = json.loads((runs / "eval" / "out" / "results.json").read_text())
    assert "greedy" in res["methods"] and any(m.startswith("ad") for m in res["methods"]), res["methods"]
    assert (runs / "eval" / "out" / "results.md").exists()
    # every job recorded its resolved launch settings in its run directory
    for r in ("collect", "lpo", "eval"):
        assert "world_size=" in (runs / r / "logs" / "jobs.txt").read_text()


LONG = ["--config", "configs/lpo/train_tiny.yaml", "--synthetic_pairs", "64", "--max_steps", "400",
        "--save_steps", "20", "--logging_steps", "20", "--report_to", "none", "--plot", "false"]


def _checkpoints(run_dir):
    d = Path(run_dir) / "out"
    return sorted(p.name for p in d.glob("checkpoint-*")) if d.is_dir() else []


def _steps_logged_once(run_dir):
    rows = [json.loads(ln) for ln in (Path(run_dir) / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "final" not in r]
    assert steps == list(range(20, 401, 20)), steps
    assert rows[-1]["final"] and rows[-1]["step"] == 400 and rows[-1]["ranks_agree"]


def _assert_resumed_and_complete(run_dir):
    log = job_log(run_dir)
    m = re.search(r"resumed from \S+checkpoint-(\d+) at step (\d+)", log)
    assert m, f"no resume in the log:\n{log[-4000:]}"
    assert int(m.group(2)) > 0
    _steps_logged_once(run_dir)  # every logging step exactly once across the two attempts
    assert (Path(run_dir) / "out" / "head" / "model.safetensors").exists()
    return int(m.group(2))


@pytest.mark.parametrize("when", ["after_a_checkpoint", "before_the_first_checkpoint"])
def test_time_limit_signal_requeues_and_resumes(cluster, tmp_path, when):
    """Slurm's warning signal (--signal=B:USR1@...) makes the batch script requeue itself; the rerun resumes from
    the newest checkpoint, or starts over when the signal came before there was one."""
    run = tmp_path / "requeue"
    job = submit(cluster, "train_lpo.sbatch", run, LONG, NPROC_PER_NODE="2",
                 ACCELERATE_CONFIG="configs/accelerate/cpu_ddp.yaml")
    if when == "after_a_checkpoint":
        wait_for(lambda: _checkpoints(run), "the first checkpoint", 300, run, cluster, job)
    else:  # the trainer has started and may have logged steps, but (almost surely) saved nothing yet
        wait_for(lambda: "starting fresh" in job_log(run), "the trainer to start", 300, run, cluster, job)
    # what Slurm sends when the time limit approaches (the sbatch scripts ask for it with --signal=B:USR1@180)
    sh(cluster, "scancel", "--signal=USR1", "--batch", job)
    wait_for(lambda: job_info(cluster, job).get("Restarts") == "1", "the requeue", 120, run)
    # Slurm holds a requeued job (~2 min) because slurmd revoked the job's credential when it killed it, and refuses
    # ("Job credential revoked") a new one issued in the same second or earlier. Release it early, but 2 s out:
    # StartTime=now lost that race under load and the job ended FAILED without running again.
    wait_for(lambda: job_info(cluster, job)["JobState"] == "PENDING", "the requeued job to be pending", 120, run)
    sh(cluster, "scontrol", "update", f"JobId={job}", "StartTime=now+2")
    info = wait_done(cluster, job, run)
    assert_completed(info, run)
    assert "requeueing job" in job_log(run)
    assert "restart=1" in (run / "logs" / "jobs.txt").read_text()
    if when == "after_a_checkpoint":
        _assert_resumed_and_complete(run)
    else:
        _steps_logged_once(run)


def test_scancel_then_resubmit_same_run_dir_resumes(cluster, tmp_path):
    run = tmp_path / "resubmit"
    job = submit(cluster, "train_lpo.sbatch", run, LONG, NPROC_PER_NODE="2",
                 ACCELERATE_CONFIG="configs/accelerate/cpu_ddp.yaml")
    wait_for(lambda: _checkpoints(run), "the first checkpoint", 300, run, cluster, job)
    sh(cluster, "scancel", job)
    assert wait_done(cluster, job, run)["JobState"] == "CANCELLED"
    assert not (run / "out" / "head").exists()  # it really was stopped before the end
    job2 = submit(cluster, "train_lpo.sbatch", run, LONG, NPROC_PER_NODE="2",
                  ACCELERATE_CONFIG="configs/accelerate/cpu_ddp.yaml")
    assert job2 != job
    assert_completed(wait_done(cluster, job2, run), run)
    _assert_resumed_and_complete(run)


def test_outside_slurm_single_node_fallback_and_errors(tmp_path):
    """The scripts run without Slurm (documented fallback) and refuse a multi-node launch without a rendezvous."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PYTHON=sys.executable, RUN_DIR=str(tmp_path / "local"), LAUNCHER="python", OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(SLURM / "train_lpo.sbatch"), "--config", "configs/lpo/train_tiny.yaml",
                        "--report_to", "none", "--plot", "false"], env=env, cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "single-node fallback" in r.stderr
    assert (tmp_path / "local" / "out" / "head" / "model.safetensors").exists()

    r = subprocess.run(["bash", str(SLURM / "train_lpo.sbatch"), "--config", "configs/lpo/train_tiny.yaml"],
                       env={**env, "NNODES": "2"}, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "set MASTER_ADDR and NODE_RANK" in r.stderr
    r = subprocess.run(["bash", str(SLURM / "train_lpo.sbatch")], env={**env, "SLURM_JOB_ID": "7"}, cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "SLURM_JOB_NODELIST is not" in r.stderr


def test_offline_sweep_agent_array(cluster, tmp_path):
    """sweep_agent.sbatch as a job array over a grid sweep YAML (no wandb server): task i runs grid point i with
    the agent's arguments; the sweep report then reads the runs."""
    run = tmp_path / "sweep"
    job = submit(cluster, "sweep_agent.sbatch", run,
                 ["configs/sweeps/lpo_tiny_grid.yaml", "--report_to", "none", "--plot", "false", "--progress", "false"],
                 ["--array=1-2"])
    root = job.split("_")[0]
    deadline = time.time() + 400
    while time.time() < deadline and sh(cluster, "squeue", "-h", "-j", root, "-o", "%i"):
        time.sleep(1)
    for task in ("1", "2"):
        info = job_info(cluster, f"{root}_{task}")
        assert info["JobState"] == "COMPLETED", f"{info}\n{job_log(run)[-6000:]}"
    from adaptive_decoder.sweeps.runs import read_runs
    from adaptive_decoder.sweeps.report import write_report

    runs = read_runs([run / "out"])
    assert sorted(r.name for r in runs) == ["lpo_tiny_grid-001", "lpo_tiny_grid-002"]
    assert sorted((r.params["beta"], r.params["learning_rate"]) for r in runs) == [(0.1, 0.03), (1.0, 0.001)]
    assert all(r.config["beta"] == r.params["beta"] for r in runs)
    s = write_report(runs, run / "report", metric="loss")
    assert (run / "report" / "report.md").exists() and s["best"]["name"] in {r.name for r in runs}


def test_multi_node_launch_is_derived_from_slurm_variables(cluster, tmp_path):
    """What each node of a 2 x 8-GPU allocation would launch (PYTHON=echo prints the command instead of running)."""
    fake = {"SLURM_JOB_ID": "4321", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_NUM_NODES": "2",
            "SLURM_GPUS_ON_NODE": "8", "PYTHON": "echo", "REPO": str(REPO)}
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    script = ("source slurm/common.sh; ad_dist_env; "
              "echo ENV $NNODES $MASTER_ADDR $MASTER_PORT $NPROC_PER_NODE $WORLD_SIZE; "
              "for rank in 0 1; do SLURM_NODEID=$rank bash slurm/node_launch.sh training/train_lpo.py --config x.yaml; done")

    def run(**extra):
        r = subprocess.run(["bash", "-c", script], env={**env, **fake, **extra}, cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    env_line, node0, node1 = run()
    assert env_line.split() == ["ENV", "2", "gpu07", str(20000 + 4321 % 20000), "8", "16"]
    for rank, line in ((0, node0), (1, node1)):
        args = line.split()
        assert args[:3] == ["-m", "accelerate.commands.launch", "--config_file"]
        assert args[3] == "configs/accelerate/multi_node.yaml"
        got = dict(zip(args[4:14:2], args[5:14:2]))
        assert got == {"--num_machines": "2", "--machine_rank": str(rank), "--num_processes": "16",
                       "--main_process_ip": "gpu07", "--main_process_port": "24321"}
        assert args[14:] == ["training/train_lpo.py", "--config", "x.yaml"]
    _, t0, t1 = run(LAUNCHER="torchrun", SLURM_GPUS_ON_NODE="gpu:4")
    assert t1.split()[:13] == ["-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", "1", "--nproc_per_node",
                               "4", "--master_addr", "gpu07", "--master_port", "24321", "training/train_lpo.py"]


def test_collect_array_shards_then_merge(cluster, tiny_model_dir, tmp_path):
    """collect_array.sbatch as an array of 2 (each task one shard of the prompts), then merge_collection.sbatch once
    both succeed: one collection holding every prompt once, which LPO reads like any other."""
    from adaptive_decoder.lpo.store import read_collection

    parts = tmp_path / "parts"
    job = submit(cluster, "collect_array.sbatch", parts,
                 ["--config", "configs/lpo/collect_tiny.yaml", "--base_model", str(tiny_model_dir), "--report", "false"],
                 ["--array=0-1"])
    root = job.split("_")[0]
    merged = tmp_path / "merged"
    merge = submit(cluster, "merge_collection.sbatch", merged, [str(parts / "out")], [f"--dependency=afterok:{root}"])
    assert_completed(wait_done(cluster, merge, merged), merged)
    for task in ("0", "1"):
        assert job_info(cluster, f"{root}_{task}")["JobState"] == "COMPLETED", job_log(parts)[-6000:]
    m, records = read_collection(merged / "out")
    assert len(m["done"]) == 10 and len(set(m["done"])) == 10  # collect_tiny.yaml's 6 + 4 prompts, once each
    assert sorted(p["shard"] for p in m["merged_from"]) == ["0/2", "1/2"]
    assert len(records) == 10 * m["settings"]["num_samples"]
