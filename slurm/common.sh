# shellcheck shell=bash
# Sourced by every slurm/*.sbatch script. Derives the distributed launch from Slurm's variables, keeps logs and
# outputs in one run directory, and makes the job requeue-safe. Works outside Slurm too (single-node fallback).
#
# Environment knobs (all optional):
#   REPO            project checkout (default: $SLURM_SUBMIT_DIR if it holds training/, else this file's parent)
#   PYTHON          interpreter of the project's environment (default: python); ACCELERATE defaults to "$PYTHON -m accelerate.commands.launch"
#   RUN_DIR         run directory (default: $RUNS_ROOT/<job name>-<job id>; RUNS_ROOT default: $REPO/runs/slurm).
#                   Give the SAME RUN_DIR to a resubmitted job to resume it.
#   LAUNCHER        accelerate (default) | torchrun | python (one process per node, no launcher)
#   ACCELERATE_CONFIG  accelerate config file (default: configs/accelerate/multi_gpu.yaml, multi_node.yaml when >1 node)
#   NPROC_PER_NODE  processes per node (default: GPUs Slurm gave the job on this node, else 1)
#   MASTER_PORT     rendezvous port (default: 20000 + job id % 20000, so two jobs on one node never collide)
#   REQUEUE_ON_SIGNAL  1 (default) = on the warning signal (#SBATCH --signal=B:USR1@...) requeue the job itself
#
# Outside Slurm (no SLURM_JOB_ID): NNODES=1, NODE_RANK=0, MASTER_ADDR=127.0.0.1 unless you set them; NNODES>1
# without Slurm needs MASTER_ADDR and NODE_RANK set on every node, otherwise it stops with an error.

set -euo pipefail

ad_log() { echo "[$(date -u +%FT%TZ) ${SLURM_JOB_ID:-local}${SLURM_RESTART_COUNT:+ restart $SLURM_RESTART_COUNT}] $*" >&2; }
ad_die() { ad_log "ERROR: $*"; exit 2; }

ad_repo() {
  if [ -n "${REPO:-}" ]; then :
  elif [ -n "${SLURM_SUBMIT_DIR:-}" ] && [ -d "$SLURM_SUBMIT_DIR/training" ]; then REPO=$SLURM_SUBMIT_DIR
  else REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); fi
  [ -d "$REPO/training" ] || ad_die "REPO=$REPO is not the adaptive-decoder checkout (no training/): set REPO"
  export REPO
}

# gpus on this node as Slurm reports them: "8", "gpu:8", "a100:4" or a list like "0,1" -> a count
ad_slurm_gpus() {
  local g=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-}}
  g=${g##*:}
  if [[ "$g" =~ ^[0-9]+$ ]]; then echo "$g"
  elif [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then awk -F, '{print NF}' <<<"$CUDA_VISIBLE_DEVICES"
  else echo 0; fi
}

# Sets and exports NNODES, MASTER_ADDR, MASTER_PORT, NPROC_PER_NODE, WORLD_SIZE (NODE_RANK is per node: see
# slurm/node_launch.sh, which reads SLURM_NODEID inside the srun step).
ad_dist_env() {
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    [ -n "${SLURM_JOB_NODELIST:-}" ] || ad_die "SLURM_JOB_ID is set but SLURM_JOB_NODELIST is not: not inside an sbatch/salloc allocation?"
    command -v scontrol >/dev/null || ad_die "scontrol not on PATH inside the job"
    NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) ||
      ad_die "scontrol show hostnames '$SLURM_JOB_NODELIST' failed (no slurm.conf / SLURM_CONF on this node?)"
    [ -n "$MASTER_ADDR" ] || ad_die "no host in SLURM_JOB_NODELIST='$SLURM_JOB_NODELIST'"
    MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
    AD_UNDER_SLURM=1
  else
    NNODES=${NNODES:-1}
    if [ "$NNODES" -gt 1 ] && { [ -z "${MASTER_ADDR:-}" ] || [ -z "${NODE_RANK:-}" ]; }; then
      ad_die "NNODES=$NNODES outside Slurm: set MASTER_ADDR and NODE_RANK on every node (or submit with sbatch)"
    fi
    MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
    MASTER_PORT=${MASTER_PORT:-29500}
    NODE_RANK=${NODE_RANK:-0}
    AD_UNDER_SLURM=0
    ad_log "no Slurm allocation (SLURM_JOB_ID unset): single-node fallback on $(hostname)"
  fi
  if [ -z "${NPROC_PER_NODE:-}" ]; then
    NPROC_PER_NODE=$(ad_slurm_gpus)
    if [ "$NPROC_PER_NODE" = 0 ] && [ "$AD_UNDER_SLURM" = 0 ] && command -v nvidia-smi >/dev/null; then
      NPROC_PER_NODE=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    fi
    [ "$NPROC_PER_NODE" -ge 1 ] 2>/dev/null || NPROC_PER_NODE=1
  fi
  WORLD_SIZE=$((NNODES * NPROC_PER_NODE))
  export NNODES MASTER_ADDR MASTER_PORT NPROC_PER_NODE WORLD_SIZE AD_UNDER_SLURM
  [ "$AD_UNDER_SLURM" = 1 ] || export NODE_RANK
  # Slurm >= 22.05: srun does not inherit --cpus-per-task from the allocation unless told
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
}

# ad_setup KIND: repo, python, run dir (logs/, out/), distributed env; records the resolved settings in the run dir.
ad_setup() {
  local kind=$1
  ad_repo
  cd "$REPO"
  PYTHON=${PYTHON:-python}
  command -v "$PYTHON" >/dev/null || ad_die "PYTHON=$PYTHON not found: point PYTHON at the project's environment"
  RUN_DIR=${RUN_DIR:-${RUNS_ROOT:-$REPO/runs/slurm}/${SLURM_JOB_NAME:-$kind}-${SLURM_JOB_ID:-local-$(date +%Y%m%d-%H%M%S)}}
  mkdir -p "$RUN_DIR/logs" "$RUN_DIR/out"
  RUN_DIR=$(cd "$RUN_DIR" && pwd)
  export RUN_DIR PYTHON
  export WANDB_MODE=${WANDB_MODE:-offline} WANDB_DIR=${WANDB_DIR:-$RUN_DIR} TOKENIZERS_PARALLELISM=false
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  ad_dist_env
  {
    echo "kind=$kind job=${SLURM_JOB_ID:-local} restart=${SLURM_RESTART_COUNT:-0} host=$(hostname) time=$(date -u +%FT%TZ)"
    echo "nnodes=$NNODES nproc_per_node=$NPROC_PER_NODE world_size=$WORLD_SIZE master=$MASTER_ADDR:$MASTER_PORT"
    echo "nodelist=${SLURM_JOB_NODELIST:-$(hostname)} partition=${SLURM_JOB_PARTITION:-} account=${SLURM_JOB_ACCOUNT:-}"
    echo "repo=$REPO python=$PYTHON launcher=${LAUNCHER:-accelerate} accelerate_config=${ACCELERATE_CONFIG:-}"
  } >>"$RUN_DIR/logs/jobs.txt"
  ad_log "$kind: run dir $RUN_DIR; $NNODES node(s) x $NPROC_PER_NODE process(es); master $MASTER_ADDR:$MASTER_PORT"
}

# ad_run CMD...: runs CMD in the background so that the batch shell can react to signals:
#   USR1 (sent by Slurm before the time limit, #SBATCH --signal=B:USR1@SECONDS): requeue this job; the recipe's
#        resume picks up from its last checkpoint when it restarts;
#   TERM (scancel, preemption, node shutdown): pass it on and let the recipe die; a requeue starts it again.
ad_run() {
  ad_log "exec: $*"
  "$@" &
  AD_CHILD=$!
  trap 'ad_on_usr1' USR1
  trap 'ad_log "SIGTERM: stopping"; kill -TERM "$AD_CHILD" 2>/dev/null || true' TERM
  local rc=0
  while :; do
    wait "$AD_CHILD" && rc=0 || rc=$?
    # wait returns >128 when a trapped signal interrupted it: keep waiting while the child lives
    if [ "$rc" -gt 128 ] && kill -0 "$AD_CHILD" 2>/dev/null; then continue; fi
    break
  done
  trap - USR1 TERM
  ad_log "finished with exit code $rc"
  return "$rc"
}

ad_on_usr1() {
  if [ "${REQUEUE_ON_SIGNAL:-1}" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    ad_log "USR1 (time limit near): requeueing job $SLURM_JOB_ID; it resumes from its last checkpoint"
    scontrol requeue "$SLURM_JOB_ID" || ad_log "scontrol requeue failed (is the job submitted with --requeue?)"
  else
    ad_log "USR1 received (REQUEUE_ON_SIGNAL=${REQUEUE_ON_SIGNAL:-1}, no Slurm job): not requeueing"
  fi
}

# ad_single CMD...: one process (collection, evaluation): one srun task under Slurm, a plain process outside.
ad_single() {
  if [ "$AD_UNDER_SLURM" = 1 ]; then ad_run srun --ntasks=1 --nodes=1 --kill-on-bad-exit=1 "$@"
  else ad_run "$@"; fi
}

# ad_distributed SCRIPT ARGS...: one launcher per node (srun --ntasks-per-node=1), each starting NPROC_PER_NODE
# workers of SCRIPT (see slurm/node_launch.sh). Outside Slurm, the launcher runs right here.
ad_distributed() {
  if [ "$AD_UNDER_SLURM" = 1 ]; then
    ad_run srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
      bash "$REPO/slurm/node_launch.sh" "$@"
  else ad_run bash "$REPO/slurm/node_launch.sh" "$@"; fi
}
