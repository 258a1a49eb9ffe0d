#!/usr/bin/env bash
# A real, single-machine Slurm (Debian 12 `slurm-wlm` 22.05 + `munge`) for Enclave's Slurm
# executor: its tests (scripts/test.sh), the benchmarks (benchmarks/bench_engines.py,
# bench_submit.py, bench_e2e.py) and `examples/fleets/local-engines.toml`.
#
#   bash scripts/slurm.sh install          apt-get install slurm-wlm munge (only if missing)
#   bash scripts/slurm.sh start [PROFILE]  write the config, start munged + slurmctld + slurmd,
#                                          wait until the node is idle (60 s at most); a no-op
#                                          when running with that profile already, a restart
#                                          when running with the other one
#   bash scripts/slurm.sh stop             stop slurmd, slurmctld and munged
#   bash scripts/slurm.sh status           daemons and `sinfo`; exit 1 when Slurm is not usable
#   bash scripts/slurm.sh config           print the slurm.conf in use (exit 1 when there is none)
#
# PROFILE is `tuned` (what `start` alone gives, and what the tests run on: throughput settings
# for many short jobs, each commented below) or `default` (only the part both profiles share:
# the minimal config of ../shared/README.md, "Real Slurm on one machine", plus the node's
# memory and the paths, so Slurm's own scheduling defaults; bench_e2e.py compares the two).
# ENCLAVE_SLURM_PROFILE picks it when no argument does.
#
# Runs as root (the daemons and the jobs it runs for Enclave's tests run as root here).
# State lives where Debian expects it: /var/lib/slurm (slurmctld state, slurmd spool),
# /var/log/slurm (logs), /etc/slurm/slurm.conf, /etc/munge/munge.key. The controller keeps its
# jobs across `stop` + `start`, like a real site's: a caller that wants an empty queue cancels
# its own jobs (`scancel`) before it stops Slurm.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
PROFILE=${ENCLAVE_SLURM_PROFILE:-tuned}  # `start PROFILE` overrides it
STATE=/var/lib/slurm
LOGS=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
WAIT_S=60

say() { printf 'slurm.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

have_slurm() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; }

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1 || true; }

do_install() {
    if have_slurm; then
        say "slurm-wlm and munge are installed"
        return
    fi
    [[ $(id -u) == 0 ]] || die "install needs root"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    say "installed slurm-wlm and munge"
}

start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    local key=/etc/munge/munge.key fresh=0
    if [[ ! -f $key || $(stat -c %s "$key") != 1024 ]]; then
        # 1024 random bytes: every host of a cluster shares this key (one host here).
        head -c 1024 /dev/urandom >"$key.tmp"
        mv "$key.tmp" "$key"
        fresh=1
    fi
    chown munge:munge "$key"
    chmod 0400 "$key"
    if [[ $fresh == 0 ]] && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    [[ -s /run/munge/munged.pid ]] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null && sleep 0.5
    # --force: start even though this machine's directories are laxer than munged likes.
    runuser -u munge -- munged --force
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    # A bit below the memory free now, rounded down to 256 MiB so that restarts write the same
    # file; slurmd drains a node whose RealMemory exceeds what it finds.
    mem_mb=$(awk '/^MemAvailable:/ { m = int($2 / 1024 * 0.9); print m - m % 256 }' /proc/meminfo)
    local tmp
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Written by Enclave's scripts/slurm.sh (profile: $PROFILE) -- one machine is the controller and
# the only compute node. Edit the script, not this file.
ClusterName=enclave
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
EOF
    # Profile `default` stops here: Slurm's own scheduling defaults (batch_sched_delay=3 s,
    # MinJobAge=300, KillWait=30, MessageTimeout=10, ...), the baseline bench_e2e.py measures.
    if [[ $PROFILE == tuned ]]; then
        local energy="acct_gather_energy/none"
        # Energy counters only where the kernel lets slurmd read them (Intel/AMD RAPL).
        if compgen -G '/sys/class/powercap/intel-rapl:*/energy_uj' >/dev/null &&
            cat /sys/class/powercap/intel-rapl:*/energy_uj >/dev/null 2>&1; then
            energy="acct_gather_energy/rapl"
        fi
        local storage="accounting_storage/none"
        # With a running slurmdbd, sacct answers for ended jobs (state, exit code, energy).
        if command -v slurmdbd >/dev/null && pgrep -x slurmdbd >/dev/null; then
            storage="accounting_storage/slurmdbd"
        fi
        cat >>"$tmp" <<EOF

# --- Tuned for throughput of many short jobs, as a high-throughput site would ---------------
# Event-driven scheduling, not batched: try to start a job the moment it is submitted or the
# moment another one ends (batch_sched_delay=0 instead of up to 3 s; no 'defer'), with no
# throttle between such passes (sched_min_interval=0), each looking at the whole queue of a
# small cluster (default_queue_depth), and a backfill pass every 5 s rather than every 30 s
# (bf_continue keeps it going after it yields its locks to RPCs). max_rpc_cnt makes the
# scheduler yield to a burst of submissions (sbatch) and status queries (squeue) so that
# these never time out.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000,sched_interval=20,bf_interval=5,bf_continue,max_rpc_cnt=64
# No waiting on COMPLETING jobs before reusing their cores.
CompleteWait=0
# A no-op epilog is not a no-op: with an Epilog set, slurmd reports each job's end with an
# EPILOG_COMPLETE message, on which slurmctld schedules at once; without one, 22.05 only
# queues that pass for its once-a-second background loop (measured here: 200 one-line jobs
# on 2 CPUs drain in 7-14 s with it, ~80 s without; 270 s with the default config).
Epilog=/bin/true
# Ended jobs stay in slurmctld's memory (squeue -t all, scontrol) for 5 minutes, so that a
# client without accounting storage still sees how a job ended; MaxJobCount bounds the memory
# that costs at a high job rate.
MinJobAge=300
MaxJobCount=100000
# Enclave enforces walltimes itself and kills after its own grace; Slurm's time limit is a
# backstop, and its SIGTERM->SIGKILL grace is short.
KillWait=10
# RPCs to a loaded controller get time to answer instead of failing the client.
MessageTimeout=30
# Logging is I/O on every job start and end: errors only.
SlurmctldDebug=error
SlurmdDebug=error
# Per-job CPU and memory accounting from /proc, sampled every 30 s (cheap).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AcctGatherEnergyType=$energy
AccountingStorageType=$storage
JobCompType=jobcomp/none
EOF
    fi
    cat >>"$tmp" <<EOF

NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    install -d -m 0755 /etc/slurm
    mv "$tmp" "$CONF"
    chmod 0644 "$CONF"
}

running() { pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID"; }

usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

start() {
    [[ $(id -u) == 0 ]] || die "start needs root"
    have_slurm || die "slurmctld/slurmd/munged not found: run \`bash scripts/slurm.sh install\` first"
    if running && usable && grep -q "(profile: $PROFILE)" "$CONF" 2>/dev/null; then
        say "already running: node $HOST $(node_state), profile $PROFILE"
        return
    fi
    stop_daemons
    start_munge
    write_conf
    install -d -m 0755 "$STATE/slurmctld" "$STATE/slurmd" "$LOGS"
    # Without -c: like a real site, the controller recovers its jobs across a restart.
    slurmctld
    slurmd
    local deadline=$((SECONDS + WAIT_S)) state=""
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case $state in
        # mixed/allocated: jobs the controller recovered from before the restart are running.
        idle | mixed | allocated) say "started: node $HOST $state ($(nproc) CPUs), partition debug, profile $PROFILE"; return ;;
        down* | drain* | drained*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    say "the node did not become idle within ${WAIT_S}s (state: ${state:-none})"
    tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 2>/dev/null || true
    exit 1
}

stop_pid() {
    local file=$1 pid
    pid_alive "$file" || return 0
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop_daemons() {
    stop_pid "$SLURMD_PID"
    stop_pid "$CTLD_PID"
}

stop() {
    stop_daemons
    stop_pid /run/munge/munged.pid
    say "stopped"
}

status() {
    local ok=0
    pid_alive "$CTLD_PID" && say "slurmctld running (pid $(cat $CTLD_PID))" || { say "slurmctld not running"; ok=1; }
    pid_alive "$SLURMD_PID" && say "slurmd running (pid $(cat $SLURMD_PID))" || { say "slurmd not running"; ok=1; }
    if [[ $ok == 0 ]]; then
        say "config: $(head -n1 "$CONF" 2>/dev/null | grep -o 'profile: [a-z]*' || echo "not written by this script")"
        sinfo || ok=1
        usable || ok=1
    fi
    return $ok
}

config() {
    [[ -f $CONF ]] || die "no $CONF: run \`bash scripts/slurm.sh start\` first"
    cat "$CONF"
}

usage() {
    say "usage: $0 install | start [tuned|default] | stop | status | config"
    exit 2
}

case ${1:-} in
install) do_install ;;
start)
    PROFILE=${2:-$PROFILE}
    [[ $PROFILE == tuned || $PROFILE == default ]] || usage
    start
    ;;
stop) stop ;;
status) status ;;
config) config ;;
*) usage ;;
esac
