"""Hyperparameter sweeps over LPO runs, as operations tooling beside the library (nothing in it imports them):

  grid.py    a wandb sweep YAML expanded the way `wandb agent` does (grid points, command lines, run ids), so a
             grid runs as a Slurm array without a wandb server;
  runs.py    a sweep's finished runs, from local metrics.jsonl directories, offline wandb runs or the wandb API;
  report.py  their report: report.md and the plots of the metric against the swept parameters.
"""
