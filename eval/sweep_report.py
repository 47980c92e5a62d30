"""Report on a hyperparameter sweep: markdown + PNG from local run directories, wandb offline runs or the wandb API.

    python eval/sweep_report.py runs/sweeps/lpo_tiny_grid --metric loss --goal minimize
    python eval/sweep_report.py runs/slurm/sweep-123/out --metric rewards/accuracies --goal maximize -o reports/x
    python eval/sweep_report.py --wandb_sweep ENTITY/PROJECT/SWEEP_ID --metric loss      # online

Reads every run directory with a metrics.jsonl (the LPO trainer's log; the config comes from the run's checkpoint
record, the swept values from sweep_params.json when slurm/sweep_grid.py made it) and every wandb offline run
(*.wandb) found under the paths; a wandb run inside a local run directory counts once. Writes report.md,
report.json, metric_per_param.png, grid.png (two swept parameters) / parallel_coordinates.png, curves.png.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adaptive_decoder.sweeps.runs import read_runs  # noqa: E402
from adaptive_decoder.sweeps.report import write_report  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="directories holding run directories and/or wandb offline runs")
    ap.add_argument("--wandb_sweep", help="ENTITY/PROJECT/SWEEP_ID of an online sweep (needs wandb login)")
    ap.add_argument("--metric", default="loss", help="summary metric to compare (last logged value)")
    ap.add_argument("--goal", default="minimize", choices=["minimize", "maximize"])
    ap.add_argument("-o", "--output_dir", help="where the report goes (default: <first path>/report)")
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    if not a.paths and not a.wandb_sweep:
        ap.error("give run directories and/or --wandb_sweep")
    for p in a.paths:
        if not Path(p).exists():
            ap.error(f"{p} does not exist")
    runs = read_runs(a.paths, wandb_sweep=a.wandb_sweep)
    if not runs:
        ap.error(f"no runs (metrics.jsonl or wandb offline runs) under {a.paths}")
    out = Path(a.output_dir or (Path(a.paths[0]) / "report" if a.paths else "sweep_report"))
    try:
        summary = write_report(runs, out, metric=a.metric, goal=a.goal,
                               title=a.title or f"Sweep report: {', '.join(a.paths) or a.wandb_sweep}")
    except ValueError as e:
        ap.error(str(e))
    best = summary["best"]
    print(f"{len(runs)} runs; best {best['name']}: {a.metric}={best[a.metric]:.6g} {best['params']}")
    print(f"wrote {out}/report.md and {', '.join(Path(f).name for f in summary['files'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
