"""Run (or print) grid point INDEX of a wandb grid sweep without a wandb server, with exactly the command and
`--key=value` arguments `wandb agent` would use (WANDB_RUN_ID set the same way), so offline clusters can sweep:

    python slurm/sweep_grid.py configs/sweeps/lpo_tiny_grid.yaml --list            # the grid points
    python slurm/sweep_grid.py configs/sweeps/lpo_tiny_grid.yaml --index 2 --run   # run point 2
    python slurm/sweep_grid.py SWEEP.yaml --index 2 --run --output_root runs/x -- --resume   # extra recipe args

Each run goes to OUTPUT_ROOT/<run id> (default runs/sweeps/<sweep name>) with sweep_params.json beside the
recipe's outputs, which eval/sweep_report.py reads. slurm/sweep_agent.sbatch runs one point per array task.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaptive_decoder.sweeps.grid import expand_command, grid_points, load_sweep, run_id_for  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="wandb sweep YAML with method: grid")
    ap.add_argument("--index", type=int, help="grid point (0-based; e.g. $SLURM_ARRAY_TASK_ID)")
    ap.add_argument("--list", action="store_true", help="print every grid point and exit")
    ap.add_argument("--run", action="store_true", help="run the point (default: print its command, one argument per line)")
    ap.add_argument("--output_root", help="run directories go here (default: runs/sweeps/<sweep name>)")
    ap.add_argument("--python", default=sys.executable, help="interpreter substituted for ${interpreter}")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # after --: recipe arguments, appended last (they win)
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    sweep = load_sweep(a.sweep)
    name = sweep.get("name") or Path(a.sweep).stem
    points = grid_points(sweep)
    if a.list:
        for i, p in enumerate(points):
            print(i, run_id_for(name, i), json.dumps(p))
        return 0
    if a.index is None or not 0 <= a.index < len(points):
        ap.error(f"--index must be in [0, {len(points) - 1}] for {a.sweep} ({len(points)} grid points), got {a.index}")
    params, run_id = points[a.index], run_id_for(name, a.index)
    out = Path(a.output_root or f"runs/sweeps/{name}") / run_id
    cmd = expand_command(sweep, params, interpreter=a.python) + ["--output_dir", str(out), "--run_name", run_id] + extra
    if not a.run:
        print("\n".join(cmd))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_params.json").write_text(json.dumps(params, indent=1))  # exactly the swept parameters
    # like the agent: the parameters also reach wandb.init through a {key: {value: v}} file
    (out / "wandb_sweep_params.json").write_text(json.dumps({k: {"value": v} for k, v in params.items()}))
    env = {**os.environ, "WANDB_RUN_ID": run_id, "WANDB_SWEEP_PARAM_PATH": str(out / "wandb_sweep_params.json")}
    print(f"[sweep {name}] point {a.index}/{len(points)} {run_id}: {json.dumps(params)}", file=sys.stderr, flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
