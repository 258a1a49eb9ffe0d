"""Trivial jobs (`true`) completed per second: Enclave's local executor vs real Slurm 22.05.

    python benchmarks/bench_e2e.py                   # Enclave, Slurm default and tuned configs
    python benchmarks/bench_e2e.py --skip-slurm

Enclave: a fresh `enclave up` (fleet `local`: three regions of one 2-CPU node each, all on
this machine), N jobs `["true"]` with cpus_per_node=1 in one POST /v1/jobs/batch at the
session label UNCLASSIFIED (so any region may run them); the clock runs from just before
the POST until no job is pending, admitted or running (polled every 50 ms with limit=1),
and GET /v1/jobs?state=completed must then list all N.
Slurm (`scripts/slurm.sh start default`, then `start tuned`): one node with CPUs=2; N
`sbatch --mem=256M --wrap true` from a bash loop (--mem as Enclave's jobs ask: without it each
job would hold all of the node's memory, so one ran at a time); the clock runs from the first
sbatch until `squeue -t all` shows every one of them ended, and N must have COMPLETED.
Each system runs alone; servers listen on 127.0.0.1 and are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds, enclave_up, git_state, machine, print_table
from bench_submit import slurm_down, slurm_up

POLL_S = 0.05
# States a Slurm job does not leave (squeue -t all shows them for MinJobAge, 300 s here).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
ENDED |= {"DEADLINE", "PREEMPTED"}


def enclave_e2e(n: int, timeout_s: float) -> dict[str, float]:
    job = {
        "name": "true",
        "command": ["true"],
        "walltime_s": 60,
        "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": 256},
    }
    with enclave_up() as server, server.client() as http:
        cpu0 = cpu_seconds(server.proc.pid)
        t0 = time.perf_counter()
        r = http.post("/v1/jobs/batch", json={"jobs": [job] * n})
        r.raise_for_status()
        accepted = time.perf_counter() - t0
        first = None
        while True:
            # Cheap polls (one item each), in lifecycle order so that a job moving on while
            # we ask is still seen: when none is pending, admitted or running, all have ended.
            left = any(_count(http, state) for state in ("pending", "admitted", "running"))
            now = time.perf_counter() - t0
            if first is None and _count(http, "completed"):
                first = now
            if not left:
                break
            if now > timeout_s:
                raise RuntimeError(f"jobs still not done after {timeout_s:.0f} s")
            time.sleep(POLL_S)
        wall = time.perf_counter() - t0
        cpu1 = cpu_seconds(server.proc.pid)
        items = http.get("/v1/jobs", params={"state": "completed", "limit": 10000}).json()["items"]
        regions = sorted({j["region"] for j in items})
    return {
        "n": n,
        "wall_s": wall,
        "rate": n / wall,
        "accepted_s": accepted,
        "first_s": first or wall,
        "failed": n - len(items),
        "where": ", ".join(regions),
        "cpu": f"{cpu1[0] - cpu0[0]:.2f} server + {cpu1[1] - cpu0[1]:.2f} jobs",
    }


def _count(http: object, state: str) -> int:
    r = http.get("/v1/jobs", params={"state": state, "limit": 1})  # type: ignore[attr-defined]
    r.raise_for_status()
    return int(r.json()["count"])


def slurm_e2e(n: int, mode: str, timeout_s: float) -> tuple[dict[str, float], str]:
    slurm_up(mode)
    try:
        config = subprocess.run(
            ["scontrol", "show", "config"], check=True, capture_output=True, text=True
        ).stdout
        keys = (
            "SchedulerType",
            "SchedulerParameters",
            "SelectType ",
            "SelectTypeParameters",
            "CompleteWait",
            "Epilog ",
            "MessageTimeout",
            "MinJobAge",
            "KillWait",
            "SchedulerTimeSlice",
            "BatchStartTimeout",
        )
        shown = "\n".join(line for line in config.splitlines() if line.startswith(keys))
        pid_files = [_config_value(config, key) for key in ("SlurmctldPidFile", "SlurmdPidFile")]
        # A name of this run's own: the controller keeps ended jobs of earlier runs for MinJobAge.
        name = f"e2e-{mode}-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        subprocess.run(
            [
                "bash",
                "-c",
                f"for i in $(seq {n}); do sbatch -Q -J {name} --mem=256M --wrap true >/dev/null || exit 1; done",
            ],
            check=True,
        )
        accepted = time.perf_counter() - t0
        first = None
        daemons0 = _daemons_cpu(pid_files)
        states: dict[str, str] = {}  # job id -> last state seen (kept if Slurm purges the job)
        while True:
            out = subprocess.run(
                ["squeue", "-h", "-t", "all", "-n", name, "-o", "%i %T"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            states.update(line.split() for line in out.splitlines())
            now = time.perf_counter() - t0
            done = sum(state == "COMPLETED" for state in states.values())
            if done and first is None:
                first = now
            left = n - sum(state in ENDED for state in states.values())
            if not left:
                break
            if now > timeout_s:
                raise RuntimeError(f"Slurm ({mode}): {left} job(s) not ended after {timeout_s:.0f} s")
            time.sleep(POLL_S if mode == "tuned" else 0.5)
        wall = time.perf_counter() - t0
        daemons = _daemons_cpu(pid_files) - daemons0
    finally:
        slurm_down()
    return (
        {
            "n": n,
            "wall_s": wall,
            "rate": n / wall,
            "accepted_s": accepted,
            "first_s": first or wall,
            "failed": n - done,
            "where": "1 node, CPUs=2",
            "cpu": f"{daemons:.2f} slurmctld+slurmd (after sbatch)",
        },
        shown,
    )


def _config_value(config: str, key: str) -> str:
    """`key`'s value in `scontrol show config` output (`Key   = value` lines)."""
    for line in config.splitlines():
        k, _, v = line.partition("=")
        if k.strip() == key:
            return v.strip()
    raise KeyError(key)


def _daemons_cpu(pid_files: list[str]) -> float:
    total = 0.0
    for pid_file in pid_files:
        own, _children = cpu_seconds(int(Path(pid_file).read_text().strip()))
        total += own
    return total


def _row(system: str, r: dict[str, float]) -> list[object]:
    return [
        system,
        int(r["n"]),
        f"{r['accepted_s']:.2f}",
        f"{r['first_s']:.2f}",
        f"{r['wall_s']:.2f}",
        f"{r['rate']:.1f}",
        int(r["failed"]),
        r["where"],
        r["cpu"],
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="jobs per system")
    ap.add_argument("--repeat", type=int, default=3, help="Enclave runs (fresh server each)")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds per run")
    ap.add_argument("--skip-slurm", action="store_true")
    ap.add_argument("--skip-tuned", action="store_true", help="Slurm default config only")
    args = ap.parse_args()
    if os.geteuid() != 0 and not args.skip_slurm:
        sys.exit("run as root (Slurm needs it), or pass --skip-slurm")

    print(f"machine: {machine()}", flush=True)
    print(f"code: {git_state()}", flush=True)
    rows = []
    for i in range(args.repeat):
        r = enclave_e2e(args.n, args.timeout)
        rows.append(_row(f"Enclave local executor (run {i + 1})", r))
        print(f"  enclave run {i + 1}: {r['rate']:.1f} jobs/s", flush=True)
    configs = []
    if not args.skip_slurm:
        for mode in ("default",) if args.skip_tuned else ("default", "tuned"):
            r, shown = slurm_e2e(args.n, mode, args.timeout)
            rows.append(_row(f"Slurm 22.05, {mode} config", r))
            configs.append((mode, shown))
            print(f"  slurm {mode}: {r['rate']:.2f} jobs/s", flush=True)
    print_table(
        f"{args.n} trivial jobs, submit to all completed (higher jobs/s is better)",
        [
            "system",
            "jobs",
            "accepted s",
            "first done s",
            "all done s",
            "jobs/s",
            "not completed",
            "ran on",
            "CPU s used",
        ],
        rows,
    )
    for mode, shown in configs:
        print(f"\nSlurm {mode} config (scontrol show config, excerpt):\n{shown}")
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
