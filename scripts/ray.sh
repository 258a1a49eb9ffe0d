#!/usr/bin/env bash
# A local Ray head for the `ray` back end, kept off the network: bash scripts/ray.sh start|stop|status|exec CMD...
#
# Ray's head binds the machine's primary interface address, not loopback, whatever
# --node-ip-address says. So the head runs inside a network namespace of its own with only
# `lo` up, where Ray falls back to 127.0.0.1; everything that talks to it (the control plane
# with a `ray` region, the tests) runs in the same namespace: `bash scripts/ray.sh exec CMD`.
#
#   start   create the namespace (lo up) and start a Ray head in it: GCS on 127.0.0.1:$ENCLAVE_RAY_PORT,
#           the job API (dashboard) on 127.0.0.1:$ENCLAVE_RAY_DASHBOARD_PORT; waits until jobs can be
#           submitted. Idempotent: a head that already answers is left as it is.
#   stop    stop every process of the namespace (the Ray processes this script started there),
#           delete the namespace and Ray's temporary directory. Idempotent.
#   status  exit 0 when the head answers.
#   exec    run CMD inside the namespace.
#
# Never `ray stop`: it kills Ray processes by name, those of other namespaces included.
# Ray's dashboard and job API have no authentication: they listen on 127.0.0.1 of this
# namespace only. Needs root (ip netns) and `ray[default]` installed for $PYTHON (python3).
#
# Settings (environment): ENCLAVE_RAY_NETNS (enc-ray), ENCLAVE_RAY_PORT (6379),
# ENCLAVE_RAY_DASHBOARD_PORT (8265), ENCLAVE_RAY_CPUS (nproc), ENCLAVE_RAY_TEMP (/tmp/ray-$NETNS).
set -euo pipefail
ns=${ENCLAVE_RAY_NETNS:-enc-ray}
port=${ENCLAVE_RAY_PORT:-6379}
dash=${ENCLAVE_RAY_DASHBOARD_PORT:-8265}
cpus=${ENCLAVE_RAY_CPUS:-$(nproc)}
temp=${ENCLAVE_RAY_TEMP:-/tmp/ray-$ns}
py=${PYTHON:-python3}

in_ns() { ip netns exec "$ns" "$@"; }
have_ns() { ip netns list | awk '{print $1}' | grep -qx -- "$ns"; }

answers() {
  have_ns || return 1
  in_ns "$py" - "$dash" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=2).read()
EOF
}

ray_bin() {
  local dir
  dir=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [ -x "$dir/ray" ]; then echo "$dir/ray"; else command -v ray; fi
}

start() {
  if answers; then
    echo "ray: head already up in namespace $ns (127.0.0.1:$port, job API 127.0.0.1:$dash)"
    return 0
  fi
  local ray
  ray=$(ray_bin) || { echo "ray: not installed for $py (pip install 'ray[default]')" >&2; return 1; }
  have_ns || ip netns add "$ns"
  in_ns ip link set lo up
  mkdir -p "$temp"
  # RAY_JOB_STOP_WAIT_TIME_S: the cluster-wide grace between a stop's SIGTERM and its SIGKILL;
  # Enclave sets it per job (its own grace), this is only the default for other clients.
  if ! in_ns env RAY_USAGE_STATS_ENABLED=0 "$ray" start --head \
      --port "$port" --num-cpus "$cpus" --temp-dir "$temp" \
      --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port "$dash" \
      --disable-usage-stats >"$temp/start.log" 2>&1; then
    cat "$temp/start.log" >&2
    echo "ray: head did not start in namespace $ns" >&2
    return 1
  fi
  # The job API needs the dashboard and its agent; wait until a submission would be taken.
  in_ns "$py" - "$dash" <<'EOF' || { echo "ray: job API did not come up" >&2; return 1; }
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 90
while True:
    try:
        urllib.request.urlopen(url + "/api/version", timeout=2).read()
        json.loads(urllib.request.urlopen(url + "/api/jobs/", timeout=5).read())
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.25)
EOF
  echo "ray: head up in namespace $ns (GCS 127.0.0.1:$port, job API 127.0.0.1:$dash, $cpus CPUs)"
}

stop() {
  if have_ns; then
    local pids
    pids=$(ip netns pids "$ns" || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      for _ in $(seq 25); do
        pids=$(ip netns pids "$ns" || true)
        [ -z "$pids" ] && break
        sleep 0.2
      done
      # shellcheck disable=SC2086
      [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns"
  fi
  rm -rf "$temp"
  echo "ray: stopped (namespace $ns removed)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  exec)
    shift
    have_ns || { echo "ray: namespace $ns does not exist (bash scripts/ray.sh start)" >&2; exit 1; }
    exec ip netns exec "$ns" "$@"
    ;;
  *) echo "usage: $0 start|stop|status|exec CMD..." >&2; exit 2 ;;
esac
