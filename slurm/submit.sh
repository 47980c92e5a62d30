#!/usr/bin/env bash
# Submit one of the project's sbatch scripts with its logs in the run directory:
#   slurm/submit.sh SCRIPT [sbatch options...] [-- recipe arguments...]
#   slurm/submit.sh slurm/train_lpo.sbatch -p gpu -A myproj --nodes=2 --gpus-per-node=8 -- --config configs/lpo/x.yaml
# Prints "<job id> <run dir>". RUN_DIR (default runs/slurm/<script name>-<UTC time>) is created with logs/ in it
# and passed to the job; to resume a cancelled run, submit again with the same RUN_DIR=... . Partition, account,
# time, GPUs: plain sbatch options here, or sbatch's own environment variables (SBATCH_PARTITION, SBATCH_ACCOUNT,
# SBATCH_TIMELIMIT, SBATCH_GPUS_PER_NODE, ...), which the #SBATCH defaults in the scripts yield to.
set -euo pipefail
[ $# -ge 1 ] && [ -f "$1" ] || { echo "usage: $0 SCRIPT.sbatch [sbatch options] [-- recipe args]" >&2; exit 2; }
script=$(realpath "$1"); shift
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
opts=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
name=$(basename "$script" .sbatch)
RUN_DIR=${RUN_DIR:-${RUNS_ROOT:-$REPO/runs/slurm}/$name-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$RUN_DIR/logs"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
job=$(cd "$REPO" && sbatch --parsable --chdir="$REPO" --output="$RUN_DIR/logs/%x-%j.out" \
      --export="ALL,REPO=$REPO,RUN_DIR=$RUN_DIR" "${opts[@]}" "$script" "$@")
echo "${job%%;*} $RUN_DIR"
