"""Jobs accepted per second: Enclave's HTTP API (single and batch, SQLite and PostgreSQL)
next to real Slurm 22.05 `sbatch` (shell loop, Python loop, job array).

    python benchmarks/bench_submit.py                 # everything (needs root for Slurm/PG)
    python benchmarks/bench_submit.py --skip-slurm --skip-pg

Only acceptance is measured: an accepted job is one the server answered 201 for (Slurm:
sbatch printed a job id). The Enclave jobs are `sleep 3600` asking for both CPUs of the
`ts-east` region, so one runs and the rest wait in the queue; the live loop keeps admitting
and scheduling them meanwhile, as it would in production. Every server is started here on
127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    Server,
    cpu_seconds,
    enclave_up,
    git_state,
    machine,
    percentile,
    postgres,
    print_table,
)

JOB = {
    "name": "bench",
    "command": ["sleep", "3600"],
    "region": "ts-east",
    "walltime_s": 86400,
    "resources": {"nodes": 1, "cpus_per_node": 2, "memory_mb": 1024},
}
SLURM = REPO / "scripts" / "slurm.sh"


def bench_single(server: Server, jobs: int, clients: int) -> dict[str, float]:
    """`clients` threads, each with its own HTTP connection, POST /v1/jobs one job at a time."""
    per_client = jobs // clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        try:
            with server.client() as http:
                http.post("/v1/jobs", json=JOB).raise_for_status()  # connect + warm
                barrier.wait()
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    http.post("/v1/jobs", json=JOB).raise_for_status()
                    latencies[i].append(time.perf_counter() - t0)
        except BaseException as exc:  # reported after the join
            errors.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    cpu0, t0 = cpu_seconds(server.proc.pid)[0], time.perf_counter()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, cpu_seconds(server.proc.pid)[0] - cpu0
    if errors:
        raise errors[0]
    lat = [x for xs in latencies for x in xs]
    return {
        "jobs": len(lat),
        "wall_s": wall,
        "rate": len(lat) / wall,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "cpu_s": cpu,
    }


def bench_batch(server: Server, batches: int, size: int, clients: int) -> dict[str, float]:
    """`clients` threads POST /v1/jobs/batch with `size` jobs each, `batches` requests in all."""
    body = {"jobs": [JOB] * size}
    per_client = batches // clients
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def worker() -> None:
        try:
            with server.client() as http:
                http.post("/v1/jobs/batch", json={"jobs": [JOB] * 10}).raise_for_status()  # warm
                barrier.wait()
                for _ in range(per_client):
                    t0 = time.perf_counter()
                    r = http.post("/v1/jobs/batch", json=body)
                    r.raise_for_status()
                    took = time.perf_counter() - t0
                    if r.json()["count"] != size:
                        raise RuntimeError("batch answer does not hold every job")
                    with lock:
                        latencies.append(took)
        except BaseException as exc:
            errors.append(exc)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.abort()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    cpu0, t0 = cpu_seconds(server.proc.pid)[0], time.perf_counter()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, cpu_seconds(server.proc.pid)[0] - cpu0
    if errors:
        raise errors[0]
    n = len(latencies) * size
    return {
        "jobs": n,
        "wall_s": wall,
        "rate": n / wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "cpu_s": cpu,
    }


def run_enclave(db_name: str, db_url: str | None, args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    with enclave_up(db=db_url) as server:
        single = bench_single(server, args.single_jobs, args.clients)
        rows.append(_row(f"Enclave API, {db_name}", f"POST /v1/jobs, {args.clients} clients", single))
        batch = bench_batch(server, args.batches, args.batch_size, args.batch_clients)
        rows.append(
            _row(
                f"Enclave API, {db_name}",
                f"POST /v1/jobs/batch x{args.batch_size}, {args.batch_clients} client(s)",
                batch,
            )
        )
        with server.client() as http:  # the live loop kept up? (informational)
            time.sleep(1)
            pending = len(http.get("/v1/jobs", params={"state": "pending", "limit": 10000}).json()["items"])
        print(f"  {db_name}: {pending} job(s) still pending admission 1 s after the last batch", flush=True)
    return rows


def _row(system: str, how: str, r: dict[str, float]) -> list[object]:
    return [
        system,
        how,
        int(r["jobs"]),
        f"{r['wall_s']:.2f}",
        f"{r['rate']:,.0f}",
        f"{r['p50'] * 1000:.1f}",
        f"{r['p99'] * 1000:.1f}",
        f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-",
    ]


# -- Slurm ------------------------------------------------------------------------------------
def slurm_shell_loop(n: int) -> dict[str, float]:
    script = f"for i in $(seq {n}); do sbatch -Q --wrap true >/dev/null || exit 1; done"
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    wall = time.perf_counter() - t0
    return {"jobs": n, "wall_s": wall, "rate": n / wall, "p50": wall / n, "p99": float("nan")}


def slurm_python_loop(n: int) -> dict[str, float]:
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        out = subprocess.run(
            ["sbatch", "--parsable", "--wrap", "true"], check=True, capture_output=True, text=True
        )
        lat.append(time.perf_counter() - t)
        int(out.stdout.strip().split(";")[0])  # a job id, or this raises
    wall = time.perf_counter() - t0
    return {
        "jobs": n,
        "wall_s": wall,
        "rate": n / wall,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
    }


def slurm_array(size: int, times: int) -> dict[str, float]:
    lat = []
    t0 = time.perf_counter()
    for _ in range(times):
        t = time.perf_counter()
        subprocess.run(["sbatch", "-Q", f"--array=0-{size - 1}", "--wrap", "true"], check=True)
        lat.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    n = size * times
    return {
        "jobs": n,
        "wall_s": wall,
        "rate": n / wall,
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
    }


def slurm_up(profile: str) -> None:
    """Start scripts/slurm.sh's `profile` with an empty queue; refuse if Slurm already runs here,
    since restarting it with this config and stopping it at the end would pull it from under
    whoever started it (a test run, say)."""
    if subprocess.run(["bash", str(SLURM), "status"], capture_output=True).returncode == 0:
        sys.exit(f"Slurm is already running here ({SLURM} status): stop it first")
    subprocess.run(["bash", str(SLURM), "install"], check=True)  # a no-op when installed
    subprocess.run(["bash", str(SLURM), "start", profile], check=True)
    # The controller recovers its jobs across a restart: cancel any left from earlier runs.
    subprocess.run(["scancel", "--user=root"], check=False)


def slurm_down() -> None:
    # Cancel first: the job arrays' tasks are still queued, and a later start would run them.
    subprocess.run(["scancel", "--user=root"], check=False)
    subprocess.run(["bash", str(SLURM), "stop"], check=False)


def run_slurm(args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    slurm_up("default")
    try:
        shell = slurm_shell_loop(args.slurm_jobs)
        rows.append(_row("Slurm 22.05 sbatch", "bash loop, sbatch --wrap true", shell))
        rows[-1][5] = f"{shell['p50'] * 1000:.1f} (mean)"
        rows[-1][6] = "-"
        subprocess.run(["scancel", "--user=root"], check=False)
        rows.append(
            _row("Slurm 22.05 sbatch", "Python loop, subprocess sbatch", slurm_python_loop(args.slurm_jobs))
        )
        subprocess.run(["scancel", "--user=root"], check=False)
        rows.append(
            _row(
                "Slurm 22.05 sbatch",
                f"job array --array=0-{args.batch_size - 1}",
                slurm_array(args.batch_size, args.slurm_arrays),
            )
        )
    finally:
        slurm_down()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--single-jobs", type=int, default=2000, help="jobs submitted one per request")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients for single submits")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-clients", type=int, default=1)
    ap.add_argument("--slurm-jobs", type=int, default=500, help="sbatch calls per Slurm loop")
    ap.add_argument("--slurm-arrays", type=int, default=4, help="job arrays of --batch-size tasks")
    ap.add_argument("--skip-slurm", action="store_true")
    ap.add_argument("--skip-pg", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0 and not (args.skip_slurm and args.skip_pg):
        sys.exit("run as root (Slurm and the throwaway PostgreSQL need it), or pass --skip-slurm --skip-pg")

    print(f"machine: {machine()}", flush=True)
    print(f"code: {git_state()}", flush=True)
    rows = run_enclave("SQLite", None, args)
    if not args.skip_pg:
        if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "postgresql"],
                check=True,
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            )
        with postgres() as url:
            rows += run_enclave("PostgreSQL", url, args)
    if not args.skip_slurm:
        rows += run_slurm(args)
    print_table(
        "Jobs accepted per second (higher is better); latency per request",
        ["system", "how", "jobs", "wall s", "jobs/s", "p50 ms", "p99 ms", "server CPU s"],
        rows,
    )
    slurm_best = max(
        (
            float(str(r[4]).replace(",", ""))
            for r in rows
            if str(r[0]).startswith("Slurm") and "array" not in str(r[1])
        ),
        default=None,
    )
    batch_rates = [float(str(r[4]).replace(",", "")) for r in rows if "batch" in str(r[1])]
    if batch_rates:
        best = max(batch_rates)
        print(f"\nbest Enclave batch rate: {best:,.0f} jobs/s (target >= 2,000)")
        if slurm_best:
            print(
                f"vs the best sbatch loop ({slurm_best:,.0f} jobs/s): {best / slurm_best:.1f}x (target >= 10x)"
            )
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
