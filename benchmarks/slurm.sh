#!/usr/bin/env bash
# Real Slurm (Debian 12 slurm-wlm 22.05) + munge on this one machine, for the benchmarks.
#
#   benchmarks/slurm.sh start [default|tuned]   install if missing, write the config, start
#                                               munged, slurmctld, slurmd; wait for the node idle
#   benchmarks/slurm.sh stop                    stop the daemons this script started, restore
#                                               an /etc/slurm/slurm.conf that was there before
#   benchmarks/slurm.sh config                  print the slurm.conf in use
#
# Must run as root. Everything is on this host (its short name resolves to 127.0.0.1 here);
# state, logs and pid files live under $SLURM_BENCH_DIR (default /tmp/slurm-bench).
#
# "default" is the minimal config of ../shared/README.md ("Real Slurm on one machine").
# "tuned" adds the usual throughput settings for many short jobs (see BENCHMARKS.md).
set -euo pipefail

dir=${SLURM_BENCH_DIR:-/tmp/slurm-bench}
conf=/etc/slurm/slurm.conf
host=$(hostname -s)

install() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm.sh: installing slurm-wlm and munge (apt)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
  fi
}

write_conf() {
  local mode=$1
  mkdir -p "$dir/state" "$dir/spool" /etc/slurm
  if [ -f "$conf" ] && [ ! -f "$dir/slurm.conf.orig" ] && ! grep -q '^# slurm-bench' "$conf"; then
    cp -p "$conf" "$dir/slurm.conf.orig"
  fi
  cat >"$conf" <<CONF
# slurm-bench ($mode): written by benchmarks/slurm.sh; restored on 'stop'
ClusterName=bench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=${SLURM_BENCH_PROCTRACK:-proctrack/linuxproc}
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
NodeName=$host CPUs=2 State=UNKNOWN
PartitionName=bench Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  if [ "$mode" = tuned ]; then
    cat >>"$conf" <<'CONF'
# Throughput tuning for many short jobs (Slurm's high-throughput guide):
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000,max_rpc_cnt=0
MessageTimeout=5
MinJobAge=5
KillWait=1
SlurmctldDebug=error
SlurmdDebug=error
CONF
  fi
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if ! munge -n </dev/null >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged --force
    echo started >"$dir/munged.ours"
  fi
}

start() {
  local mode=${1:-default}
  [ "$(id -u)" = 0 ] || { echo "slurm.sh: run as root" >&2; exit 1; }
  if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    echo "slurm.sh: slurmctld/slurmd already run here (not started by this script?); stop them first" >&2
    exit 1
  fi
  install
  mkdir -p "$dir"
  rm -rf "$dir/state" "$dir/spool" "$dir/jobcomp.log" "$dir"/*.log
  write_conf "$mode"
  start_munge
  slurmctld -c  # -c: clean start, no saved jobs
  slurmd
  for _ in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
      echo "slurm.sh: node $host idle ($mode config)" >&2
      return 0
    fi
    sleep 1
  done
  echo "slurm.sh: node never became idle" >&2
  sinfo >&2 || true
  tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
  exit 1
}

stop_pidfile() {
  local file=$1 pid
  pid=$(cat "$file" 2>/dev/null) || return 0
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop() {
  scancel --user=root >/dev/null 2>&1 || true
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  if [ -f "$dir/munged.ours" ]; then
    stop_pidfile /run/munge/munged.pid
    rm -f "$dir/munged.ours"
  fi
  if [ -f "$dir/slurm.conf.orig" ]; then
    mv "$dir/slurm.conf.orig" "$conf"
  elif grep -q '^# slurm-bench' "$conf" 2>/dev/null; then
    rm -f "$conf"
  fi
}

case "${1:-}" in
  start) start "${2:-default}" ;;
  stop) stop ;;
  config) cat "$conf" ;;
  *) echo "usage: $0 start [default|tuned] | stop | config" >&2; exit 2 ;;
esac
