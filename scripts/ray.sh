#!/usr/bin/env bash
# A local Ray head for the `ray` back end, kept off the network: bash scripts/ray.sh start|stop|status|exec CMD...
#
# Ray's head binds the machine's primary interface address, not loopback, whatever
# --node-ip-address says. So the head runs inside a network namespace of its own, where Ray
# falls back to 127.0.0.1 for everything it binds, joined to the root namespace by one veth
# pair of this script's own: $ENCLAVE_RAY_ADDR on the namespace's end, the address below it on
# the host's (a /30 of link-local space by default, never routed off the machine). Only the job
# API (the dashboard) listens on the link; it asks for Ray's token (RAY_AUTH_MODE=token), which
# this script generates and keeps in $ENCLAVE_RAY_TEMP/auth_token (0600, root): name it as the
# region's `token_file`. So `enclave up` runs in the root namespace, beside Slurm's daemons on
# loopback, and reaches Ray at http://$ENCLAVE_RAY_ADDR:$ENCLAVE_RAY_DASHBOARD_PORT.
#
#   start   create the namespace and the link and start a Ray head in it: GCS on 127.0.0.1:$ENCLAVE_RAY_PORT
#           of the namespace, the job API on port $ENCLAVE_RAY_DASHBOARD_PORT of the namespace's
#           loopback and of $ENCLAVE_RAY_ADDR; waits until jobs can be submitted. Idempotent: a
#           head that already answers is left as it is.
#   stop    stop every process of the namespace (the Ray processes this script started there),
#           delete the namespace (and with it the link) and Ray's temporary directory. Idempotent.
#   status  exit 0 when the head answers.
#   exec    run CMD inside the namespace.
#   env     print the settings a fleet file needs (address, dashboard, token_file).
#
# Never `ray stop`: it kills Ray processes by name, those of other namespaces included.
# Needs root (ip netns, ip link) and `ray[default]` >= 2.52 (token authentication) for $PYTHON.
#
# Settings (environment): ENCLAVE_RAY_NETNS (enc-ray), ENCLAVE_RAY_ADDR (169.254.200.2: the
# namespace's end; its last octet 2 mod 4, the host's end one below), ENCLAVE_RAY_PORT (6379),
# ENCLAVE_RAY_DASHBOARD_PORT (8265), ENCLAVE_RAY_CPUS (nproc), ENCLAVE_RAY_TEMP (/tmp/ray-$NETNS).
set -euo pipefail
ns=${ENCLAVE_RAY_NETNS:-enc-ray}
addr=${ENCLAVE_RAY_ADDR:-169.254.200.2}
port=${ENCLAVE_RAY_PORT:-6379}
dash=${ENCLAVE_RAY_DASHBOARD_PORT:-8265}
cpus=${ENCLAVE_RAY_CPUS:-$(nproc)}
temp=${ENCLAVE_RAY_TEMP:-/tmp/ray-$ns}
py=${PYTHON:-python3}
token=$temp/auth_token

[[ $addr =~ ^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})\.([0-9]{1,3})$ ]] && ((BASH_REMATCH[2] % 4 == 2)) \
  || { echo "ray: ENCLAVE_RAY_ADDR=$addr: want a.b.c.d with d = 2 mod 4 (the namespace's end of a /30)" >&2; exit 2; }
host_addr=${BASH_REMATCH[1]}.$((BASH_REMATCH[2] - 1))
# Interface names hold 15 characters: both ends are named after a digest of the namespace's.
link=er$(printf %s "$ns" | md5sum | cut -c1-10)

in_ns() { ip netns exec "$ns" "$@"; }
have_ns() { ip netns list | awk '{print $1}' | grep -qx -- "$ns"; }

# The job API answers Enclave's way in: from this (the root) namespace, over the link, with the token.
answers() {
  have_ns && [ -s "$token" ] || return 1
  "$py" - "http://$addr:$dash" "$token" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/api/version", headers={"Authorization": "Bearer " + open(sys.argv[2]).read().strip()})
urllib.request.urlopen(req, timeout=2).read()
EOF
}

ray_bin() {
  local dir
  dir=$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [ -x "$dir/ray" ]; then echo "$dir/ray"; else command -v ray; fi
}

start() {
  if answers; then
    echo "ray: head already up in namespace $ns (job API http://$addr:$dash, token $token)"
    return 0
  fi
  local ray
  ray=$(ray_bin) || { echo "ray: not installed for $py (pip install 'ray[default]')" >&2; return 1; }
  have_ns || ip netns add "$ns"
  in_ns ip link set lo up
  ip link show "$link-h" >/dev/null 2>&1 || ip link add "$link-h" type veth peer name "$link-n" netns "$ns"
  ip addr replace "$host_addr/30" dev "$link-h"
  ip link set "$link-h" up
  in_ns ip addr replace "$addr/30" dev "$link-n"
  in_ns ip link set "$link-n" up
  (umask 077 && mkdir -p "$temp")
  chmod 0700 "$temp"
  [ -s "$token" ] || (umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$token")
  # RAY_JOB_STOP_WAIT_TIME_S: the cluster-wide grace between a stop's SIGTERM and its SIGKILL;
  # Enclave sets it per job (its own grace), this is only the default for other clients.
  if ! in_ns env RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token" "$ray" start --head \
      --port "$port" --num-cpus "$cpus" --temp-dir "$temp" \
      --include-dashboard=true --dashboard-host=0.0.0.0 --dashboard-port "$dash" \
      --disable-usage-stats >"$temp/start.log" 2>&1; then
    cat "$temp/start.log" >&2
    echo "ray: head did not start in namespace $ns" >&2
    return 1
  fi
  # The job API needs the dashboard and its agent; wait until a submission would be taken.
  "$py" - "http://$addr:$dash" "$token" <<'EOF' || { echo "ray: job API did not come up" >&2; return 1; }
import json, sys, time, urllib.request
url, auth = sys.argv[1], {"Authorization": "Bearer " + open(sys.argv[2]).read().strip()}
deadline = time.monotonic() + 90
while True:
    try:
        urllib.request.urlopen(urllib.request.Request(url + "/api/version", headers=auth), timeout=2).read()
        json.loads(urllib.request.urlopen(urllib.request.Request(url + "/api/jobs/", headers=auth), timeout=5).read())
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.25)
EOF
  echo "ray: head up in namespace $ns (job API http://$addr:$dash, token $token, $cpus CPUs)"
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
  ip link del "$link-h" 2>/dev/null || true  # gone with the namespace's end, unless that never moved
  rm -rf "$temp"
  echo "ray: stopped (namespace $ns removed)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  env) printf 'address = "%s:%s"\ndashboard = "http://%s:%s"\ntoken_file = "%s"\n' "$addr" "$port" "$addr" "$dash" "$token" ;;
  exec)
    shift
    have_ns || { echo "ray: namespace $ns does not exist (bash scripts/ray.sh start)" >&2; exit 1; }
    exec ip netns exec "$ns" "$@"
    ;;
  *) echo "usage: $0 start|stop|status|env|exec CMD..." >&2; exit 2 ;;
esac
