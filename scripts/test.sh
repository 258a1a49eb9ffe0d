#!/usr/bin/env bash
# The project's test command: bash scripts/test.sh [pytest args...]
#
# On a fresh Debian 12 machine with python3 + pip: installs the Debian packages the tests need,
# installs the project with its dev extra, starts a throwaway PostgreSQL (scripts/pg.sh) for
# the tests (ENCLAVE_TEST_PG_URL; an already exported one is used as is), runs pytest, then
# ruff, import-linter and mypy. Runs every check; exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
py=${PYTHON:-python3}
section() { printf '\n==== %s ====\n' "$*"; }

section "Debian packages"
need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v slurmctld >/dev/null || need+=(slurm-wlm munge)   # the Slurm executor's real engine
command -v ip >/dev/null || need+=(iproute2)                 # network namespaces for Ray
command -v bwrap >/dev/null || need+=(bubblewrap)            # every job runs confined by it
command -v chromium >/dev/null || need+=(chromium)           # /docs rendered with no network
if ((${#need[@]})); then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  if ! { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "${need[@]}"; }; then
    echo "apt-get install ${need[*]} failed" >&2; exit 1
  fi
else
  echo "all present"
fi

section "Python packages"
# PIP_BREAK_SYSTEM_PACKAGES: a Debian-managed python3 refuses global installs; CI machines are
# throwaway, and other interpreters ignore the variable.
# torch first, pinned: it is the CPU build that lies on this machine kind's disk (an unpinned
# torch would pull a CUDA build of several GB); the ai extra's range then installs nothing more.
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$py" -m pip install -q 'torch==2.13.0' && "$py" -m pip install -q -e '.[dev,ai,ray]' \
  || { echo "pip install failed" >&2; exit 1; }
echo "installed enclave[dev,ai,ray]"
# Console scripts (lint-imports) of this interpreter come first.
PATH="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"

# Engines this run starts are stopped when it ends, however it ends.
stops=()
trap 'for s in "${stops[@]}"; do $s; done' EXIT
trap 'exit 130' INT TERM  # run the EXIT trap on Ctrl-C / kill too

section "PostgreSQL"
if [ -z "${ENCLAVE_TEST_PG_URL:-}" ]; then
  # A directory of this run's own, so that concurrent runs do not stop each other's server.
  export ENCLAVE_PG_DIR=/tmp/enclave-pg-test.$$
  stops+=("bash scripts/pg.sh stop")
  ENCLAVE_TEST_PG_URL=$(bash scripts/pg.sh start) || { echo "could not start PostgreSQL" >&2; exit 1; }
  export ENCLAVE_TEST_PG_URL
fi
sed -E 's#(//[^:/@]+:)[^@]*@#\1***@#' <<<"ENCLAVE_TEST_PG_URL=$ENCLAVE_TEST_PG_URL"  # password hidden

section "Slurm"
# slurmctld + slurmd on this machine for the Slurm executor's tests (Ray: each test module
# starts its own head in a network namespace of its own, and stops it).
if ! bash scripts/slurm.sh status >/dev/null 2>&1; then
  stops+=("bash scripts/slurm.sh stop")
  bash scripts/slurm.sh start || { echo "could not start Slurm" >&2; exit 1; }
fi
sinfo

failed=()
section "pytest $*"
"$py" -m pytest "$@"
pytest_rc=$?
((pytest_rc == 0)) || failed+=("pytest (exit $pytest_rc)")

section "ruff"
"$py" -m ruff check src tests || failed+=(ruff)

section "import-linter"
lint-imports || failed+=(lint-imports)

section "mypy"
"$py" -m mypy || failed+=(mypy)

section "Summary"
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[@]}"
  ((pytest_rc != 0)) && exit "$pytest_rc"
  exit 1
fi
echo "all passed"
