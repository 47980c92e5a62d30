#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on this machine (for tests and for trying the sbatch scripts on a laptop).
#
#   slurm/local_cluster.sh start [DIR]   # writes DIR/etc/slurm.conf + cgroup.conf, starts munged, slurmctld, slurmd
#   eval "$(slurm/local_cluster.sh env [DIR])"   # export SLURM_CONF so sbatch/squeue/scontrol talk to it
#   slurm/local_cluster.sh stop  [DIR]   # cancels its jobs, stops ONLY the daemons whose PIDs it recorded
#
# DIR defaults to ${ADAPTIVE_DECODER_SLURM_DIR:-/tmp/adaptive-decoder-slurm}. Everything (config, munge key and
# socket, state, spool, logs, pid files) lives under DIR, so it never touches /etc/slurm, /etc/munge or a system
# munged/slurmd that may already run here; ports are picked free at start. Needs the Debian packages
# `slurm-wlm munge` (slurmctld, slurmd, munged on PATH or in /usr/sbin) and root, or the same user for every
# daemon and job (SlurmUser = the current user). Overridable: CPUS (default 2), REAL_MEMORY (MB, default half of
# MemTotal), PARTITION (default debug), NODE_NAME (default `hostname -s`).
set -euo pipefail

cmd=${1:-}
DIR=$(realpath -m "${2:-${ADAPTIVE_DECODER_SLURM_DIR:-/tmp/adaptive-decoder-slurm}}")
PATH="$PATH:/usr/sbin:/sbin"

die() { echo "local_cluster: $*" >&2; exit 1; }

free_port() {  # a TCP port nobody listens on, in [20000, 40000)
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "timed out after ${t}s waiting for $what (logs: $DIR/log)"
}

start() {
  for b in munged slurmctld slurmd sbatch scontrol; do
    command -v "$b" >/dev/null || die "$b not found: install the Debian packages slurm-wlm and munge"
  done
  if [ -f "$DIR/pids" ]; then
    while read -r name pid; do
      alive "$pid" && die "a cluster from $DIR is already running ($name pid $pid): run '$0 stop $DIR' first"
    done <"$DIR/pids"
  fi
  local user node cpus mem ctld_port slurmd_port
  user=$(id -un)
  node=${NODE_NAME:-$(hostname -s)}
  cpus=${CPUS:-2}
  mem=${REAL_MEMORY:-$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)}
  ctld_port=$(free_port); slurmd_port=$(free_port)
  [ "$ctld_port" != "$slurmd_port" ] || slurmd_port=$(free_port)
  mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
  chmod 700 "$DIR/munge"
  : >"$DIR/pids"

  # munge: our own key, socket, pid, log and seed files (munged insists on private directories)
  [ -s "$DIR/munge/munge.key" ] || {
    if command -v mungekey >/dev/null; then mungekey --create --keyfile="$DIR/munge/munge.key" --bits=1024
    else dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none; fi
  }
  chmod 400 "$DIR/munge/munge.key"
  local sock="$DIR/munge/munge.socket"
  munged --foreground --force --socket="$sock" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
    </dev/null >>"$DIR/log/munged.out" 2>&1 &
  echo "munged $!" >>"$DIR/pids"
  wait_for 20 "munged socket" test -S "$sock"

  cat >"$DIR/etc/slurm.conf" <<CONF
# written by slurm/local_cluster.sh: a single-node test cluster on 127.0.0.1
ClusterName=adlocal
SlurmctldHost=${node}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${slurmd_port}
SlurmUser=${user}
SlurmdUser=${user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${sock}
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool/slurmd-%n
SlurmctldPidFile=${DIR}/run/slurmctld.pid
SlurmdPidFile=${DIR}/run/slurmd.pid
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=${DIR}/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=${PARTITION:-debug} Nodes=${node} Default=YES MaxTime=INFINITE State=UP
CONF
  cat >"$DIR/etc/cgroup.conf" <<CONF
# proctrack/linuxproc + task/none never use cgroups; slurmd still reads this file
CgroupPlugin=cgroup/v1
IgnoreSystemd=yes
CONF
  : >"$DIR/etc/plugstack.conf"  # no site SPANK plugins from /etc/slurm

  export SLURM_CONF="$DIR/etc/slurm.conf"
  slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 &
  echo "slurmctld $!" >>"$DIR/pids"
  wait_for 60 "slurmctld" scontrol ping
  slurmd -D -N "$node" -f "$SLURM_CONF" </dev/null >>"$DIR/log/slurmd.out" 2>&1 &
  echo "slurmd $!" >>"$DIR/pids"
  wait_for 60 "node $node to be idle" bash -c "sinfo -h -N -o '%t' | grep -qx 'idle'"
  echo "local Slurm cluster up: SLURM_CONF=$SLURM_CONF (node $node, $cpus CPUs, ports $ctld_port/$slurmd_port)"
}

stop() {
  [ -f "$DIR/pids" ] || { echo "local_cluster: no $DIR/pids, nothing to stop"; return 0; }
  export SLURM_CONF="$DIR/etc/slurm.conf"
  # cancel our jobs first so slurmd cleans up their steps, then stop the daemons we recorded (reverse order)
  if scontrol ping >/dev/null 2>&1; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
  fi
  tac "$DIR/pids" | while read -r name pid; do
    alive "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 40); do alive "$pid" || break; sleep 0.25; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    echo "stopped $name (pid $pid)"
  done
  rm -f "$DIR/pids"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$DIR/etc/slurm.conf" ;;
  status) SLURM_CONF="$DIR/etc/slurm.conf" sinfo; SLURM_CONF="$DIR/etc/slurm.conf" squeue ;;
  *) die "usage: $0 start|stop|env|status [DIR]" ;;
esac
