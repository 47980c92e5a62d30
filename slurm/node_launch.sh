#!/usr/bin/env bash
# Runs once per node (inside `srun --ntasks-per-node=1`, or directly outside Slurm): starts NPROC_PER_NODE
# worker processes of the given script with accelerate launch / torchrun, using the rendezvous that
# slurm/common.sh derived (MASTER_ADDR, MASTER_PORT, NNODES, NPROC_PER_NODE). NODE_RANK = this node's index.
#   node_launch.sh training/train_lpo.py --config ... [recipe args]
set -euo pipefail
: "${MASTER_ADDR:?source slurm/common.sh first}" "${MASTER_PORT:?}" "${NNODES:?}" "${NPROC_PER_NODE:?}"
NODE_RANK=${SLURM_NODEID:-${NODE_RANK:-0}}
WORLD_SIZE=$((NNODES * NPROC_PER_NODE))
PYTHON=${PYTHON:-python}
script=$1; shift
if [ -z "${ACCELERATE_CONFIG:-}" ]; then
  if [ "$NNODES" -gt 1 ]; then ACCELERATE_CONFIG=configs/accelerate/multi_node.yaml
  elif [ "$NPROC_PER_NODE" -gt 1 ]; then ACCELERATE_CONFIG=configs/accelerate/multi_gpu.yaml
  else ACCELERATE_CONFIG=configs/accelerate/single_gpu.yaml; fi
fi
echo "[node $NODE_RANK/$NNODES $(hostname)] ${LAUNCHER:-accelerate}: $NPROC_PER_NODE process(es), world $WORLD_SIZE, master $MASTER_ADDR:$MASTER_PORT" >&2
case "${LAUNCHER:-accelerate}" in
  accelerate)
    # the config file gives the kind of run (DDP / DeepSpeed / CPU); the topology always comes from Slurm
    exec $PYTHON -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" \
      --num_machines "$NNODES" --machine_rank "$NODE_RANK" --num_processes "$WORLD_SIZE" \
      --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
      "$script" "$@" ;;
  torchrun)
    exec $PYTHON -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" \
      --nproc_per_node "$NPROC_PER_NODE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
      "$script" "$@" ;;
  python)
    [ "$WORLD_SIZE" = 1 ] || { echo "LAUNCHER=python runs one process; world size is $WORLD_SIZE" >&2; exit 2; }
    exec $PYTHON "$script" "$@" ;;
  *) echo "unknown LAUNCHER=$LAUNCHER (accelerate | torchrun | python)" >&2; exit 2 ;;
esac
