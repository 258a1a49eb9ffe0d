#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests.
#
#   scripts/pg.sh start   init + start a cluster, create database enclave_test and role enclave,
#                         print postgresql+psycopg://enclave:PASS@127.0.0.1:PORT/enclave_test
#   scripts/pg.sh stop    stop it and remove its directory
#
# Everything lives in $ENCLAVE_PG_DIR (default /tmp/enclave-pg): data/, sock/, log, url.
# The server listens on 127.0.0.1 only, on the first free port from $ENCLAVE_PG_PORT (55432).
# Run as root, the server runs as the `postgres` OS user (postgres refuses to run as root).
# Logs go to stderr; stdout carries only the URL.
set -euo pipefail

dir=${ENCLAVE_PG_DIR:-/tmp/enclave-pg}
first_port=${ENCLAVE_PG_PORT:-55432}
export LC_ALL=C.UTF-8
shopt -s nullglob dotglob

bin=$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)
bin=${bin%/initdb}
[ -n "$bin" ] || { echo "pg.sh: no PostgreSQL found under /usr/lib/postgresql" >&2; exit 1; }

# Run a PostgreSQL binary as the cluster owner; cd / so that it never sits in a directory
# the postgres user may not read.
if [ "$(id -u)" = 0 ]; then
  owner=postgres
  as_owner() { (cd / && runuser -u postgres -- "$@"); }
else
  owner=$(id -un)
  as_owner() { (cd / && "$@"); }
fi

stop() {
  # Refuse to delete a directory that is not one of ours.
  local f
  for f in "$dir"/*; do
    case ${f##*/} in data | sock | log | url) ;;
      *) echo "pg.sh: $dir holds $f, not a pg.sh directory; not touching it" >&2; exit 1 ;;
    esac
  done
  # Stop the server if its postmaster still runs (a zombie left by kill -9 counts as gone:
  # pg_ctl would wait on it in vain).
  local pid state
  pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) || pid=
  state=$(awk '{print $3}' "/proc/${pid:-0}/stat" 2>/dev/null) || state=
  if [ -n "$state" ] && [ "$state" != Z ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -t 30 stop >&2 \
      || as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
  fi
  rm -rf "$dir"
}

start() {
  stop  # leftovers of an earlier run in the same directory
  mkdir -p "$dir/sock"
  chmod 700 "$dir"
  chown -R "$owner" "$dir"
  local out
  out=$(as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 2>&1) || { echo "$out" >&2; echo "pg.sh: initdb failed" >&2; exit 1; }
  # A test server: durability off for speed.
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
unix_socket_permissions = 0700
fsync = off
synchronous_commit = off
full_page_writes = off
CONF

  # Take the first port nobody listens on; if another run takes it meanwhile, try the next.
  local port
  for ((port = first_port; port < first_port + 50; port++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
    rm -f "$dir/log"
    if as_owner "$bin/pg_ctl" -D "$dir/data" -o "-p $port" -l "$dir/log" -w -t 60 start >&2; then
      break
    fi
    grep -q 'Address already in use' "$dir/log" || break  # not a port clash: no use trying more
  done
  if ! as_owner "$bin/pg_isready" -q -h "$dir/sock" -p "$port"; then
    tail -n 20 "$dir/log" >&2 || true
    echo "pg.sh: could not start PostgreSQL (last port tried: $port; log above)" >&2
    exit 1
  fi

  local pass
  pass=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')  # hex: safe in a URL as is
  as_owner "$bin/psql" -q -X -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE enclave LOGIN CREATEDB PASSWORD '$pass'" \
    -c "CREATE DATABASE enclave_test OWNER enclave" >&2
  echo "postgresql+psycopg://enclave:$pass@127.0.0.1:$port/enclave_test" | tee "$dir/url"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
