"""One workload through Enclave on each back end (local, Slurm, Ray) vs the engines alone (issue 6).

    python benchmarks/bench_engines.py                    # 200 jobs, every back end (as root)
    python benchmarks/bench_engines.py --jobs 10 --skip-ray

Workload: N jobs (default 200), a seeded shuffle of half ``true`` and half ``sleep 1``, each
1 CPU and 256 MiB, walltime 60 s, submitted in the same order to every system. Runs, one after
the other on this machine (2 CPUs here; every system gets all of them):

* **local processes, straight**: the jobs as plain subprocesses, as many at a time as there
  are CPUs (the floor for the local back end: no engine at all).
* **Enclave, local back end**: a fresh ``enclave up --fleet examples/fleets/local-engines.toml``
  (its own ENCLAVE_HOME), all N in one ``POST /v1/jobs/batch`` with ``region = gov-east``.
* **Enclave through a region worker** (local processes): ``enclave up --fleet
  examples/fleets/region-workers.toml`` plus ``enclave worker --region ts-east`` as its own
  process (own home, a region credential made for the run); ``region = ts-east``.
* **Enclave on Slurm** (``region = secret-west``, partition ``debug``), and **Slurm, straight**:
  N ``sbatch`` calls from Python with the options Enclave's executor uses (partition, 1 node,
  1 task, 1 CPU, ``--mem``, ``--time``, ``--no-requeue``, output files), then ``squeue``
  polled until none of them is queued or running; ``squeue -t all`` must show them COMPLETED.
  Slurm is the one ``scripts/slurm.sh start`` runs (its tuned profile; see that script for the
  settings and why); left running if it already was, else started and stopped here.
* **Enclave on Ray** (``region = ts-east``), and **Ray, straight**: the head ``scripts/ray.sh``
  starts (its own network namespace, its job API over a veth link at 169.254.200.2 asking for
  its token), reached from here as the README's recipe does. Straight: N ``POST /api/jobs/``
  to Ray's job submission API with the token (entrypoint = the command,
  ``entrypoint_num_cpus = 1``, ``entrypoint_memory`` = 256 MiB), then ``GET /api/jobs/`` polled
  until all of them have ended. Ray is stopped after only if this script started it.

The clock runs from just before the first submission until the client sees the last job end
(Enclave: no job pending, admitted or running, polled every 50 ms; Slurm every 100 ms; Ray
every 250 ms). Per-job overhead of Enclave = (T_Enclave - T_engine) / N.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, enclave_up, git_state, machine, print_table

FLEET = REPO / "examples" / "fleets" / "local-engines.toml"
WORKER_FLEET = REPO / "examples" / "fleets" / "region-workers.toml"
# scripts/ray.sh's defaults, as local-engines.toml names them.
RAY_NS = os.environ.get("ENCLAVE_RAY_NETNS", "enc-ray")
RAY_API = f"http://{os.environ.get('ENCLAVE_RAY_ADDR', '169.254.200.2')}:{os.environ.get('ENCLAVE_RAY_DASHBOARD_PORT', '8265')}"
RAY_TOKEN = Path(os.environ.get("ENCLAVE_RAY_TEMP", f"/tmp/ray-{RAY_NS}")) / "auth_token"
MEM_MB = 256
WALLTIME_S = 60


def workload(n: int, seed: int) -> list[list[str]]:
    cmds = [["true"]] * (n // 2) + [["sleep", "1"]] * (n - n // 2)
    random.Random(seed).shuffle(cmds)
    return cmds


def result(system: str, n: int, wall: float, ok: int, accepted: float, note: str = "") -> dict[str, Any]:
    return {"system": system, "n": n, "wall_s": wall, "ok": ok, "accepted_s": accepted, "note": note}


# -- local processes, straight ---------------------------------------------------------------
def local_straight(cmds: list[list[str]]) -> dict[str, Any]:
    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cpus) as pool:
        rcs = list(pool.map(lambda c: subprocess.run(c, check=False).returncode, cmds))
    wall = time.perf_counter() - t0
    return result("local processes, straight", len(cmds), wall, rcs.count(0), 0.0, f"{cpus} at a time")


# -- Enclave -----------------------------------------------------------------------------------
def enclave_run(
    cmds: list[list[str]], region: str, timeout_s: float, fleet: Path = FLEET, worker: bool = False
) -> dict[str, Any]:
    jobs = [
        {
            "name": f"bench-{i}",
            "command": c,
            "walltime_s": WALLTIME_S,
            "resources": {"nodes": 1, "cpus_per_node": 1, "memory_mb": MEM_MB},
            "region": region,
        }
        for i, c in enumerate(cmds)
    ]
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(enclave_up(fleet=str(fleet)))
        http = stack.enter_context(server.client())
        if worker:
            stack.enter_context(region_worker(server, http, region))
        t0 = time.perf_counter()
        r = http.post("/v1/jobs/batch", json={"jobs": jobs})
        r.raise_for_status()
        accepted = time.perf_counter() - t0
        while True:
            # In lifecycle order, so a job moving on while we ask is still seen.
            if not any(_count(http, s) for s in ("pending", "admitted", "running")):
                break
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"Enclave ({region}): jobs still not done after {timeout_s:.0f} s")
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        items = http.get("/v1/jobs", params={"limit": 10000}).json()["items"]
    ok = sum(
        1 for j in items if j["state"] == "completed" and j.get("exit_code") == 0 and j["region"] == region
    )
    name = f"Enclave, {region} via its region worker" if worker else f"Enclave, {region}"
    return result(name, len(cmds), wall, ok, accepted, "one POST /v1/jobs/batch")


@contextlib.contextmanager
def region_worker(server: Any, http: httpx.Client, region: str) -> Any:
    """`enclave worker --region REGION` as its own process, with its own home and credential."""
    made = http.post("/v1/worker-credentials", json={"region": region})
    made.raise_for_status()
    home = Path(tempfile.mkdtemp(prefix="enclave-bench-worker-"))
    env = dict(os.environ, ENCLAVE_HOME=str(home), ENCLAVE_URL=server.url)
    env["ENCLAVE_WORKER_CREDENTIAL"] = made.json()["secret"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "enclave", "worker", "--region", region], env=env, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def _count(http: httpx.Client, state: str) -> int:
    r = http.get("/v1/jobs", params={"state": state, "limit": 1})
    r.raise_for_status()
    return int(r.json()["count"])


# -- Slurm -------------------------------------------------------------------------------------
def slurm_running() -> bool:
    return (
        subprocess.run(["bash", str(REPO / "scripts/slurm.sh"), "status"], capture_output=True).returncode
        == 0
    )


def slurm_config() -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    keys = (
        "SchedulerParameters",
        "SchedulerType",
        "Epilog ",
        "CompleteWait",
        "MinJobAge",
        "AccountingStorageType",
    )
    return "\n".join(line.strip() for line in out.splitlines() if line.startswith(keys))


def slurm_straight(cmds: list[list[str]], timeout_s: float, in_flight: int = 0) -> dict[str, Any]:
    """All N sbatch calls at once; or, with ``in_flight`` > 0, a new one only as one ends.

    The throttled mode submits the way Enclave does (it only hands a region's engine what
    fits its capacity), to tell Slurm's own latency for that pattern from Enclave's.
    """
    out_dir = Path(tempfile.mkdtemp(prefix="enclave-bench-sbatch-"))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "SLURM_CONF")}
    minutes = -(-WALLTIME_S // 60) + 1
    ids: list[str] = []
    finished = False

    def sbatch(i: int) -> None:
        out = subprocess.run(
            [
                "sbatch", "--parsable", f"--job-name=bench-{i}", "--partition=debug", "--nodes=1",
                "--ntasks-per-node=1", "--cpus-per-task=1", f"--mem={MEM_MB}M", f"--time={minutes}",
                f"--output={out_dir}/{i}.out", f"--error={out_dir}/{i}.err", f"--chdir={out_dir}",
                "--export=ALL", "--no-requeue", "--wrap", " ".join(cmds[i]),
            ],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        ids.append(out.stdout.strip().split(";")[0])

    try:
        t0 = time.perf_counter()
        cap = in_flight or len(cmds)
        for i in range(min(cap, len(cmds))):
            sbatch(i)
        accepted = time.perf_counter() - t0
        while True:
            left = subprocess.run(
                ["squeue", "-h", "-j", ",".join(ids), "-o", "%i"], capture_output=True, text=True, check=False
            ).stdout.split()
            if len(ids) < len(cmds) and len(left) < cap:
                for i in range(len(ids), min(len(cmds), len(ids) + cap - len(left))):
                    sbatch(i)
                continue
            if not left:
                break
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"Slurm: {len(left)} job(s) still queued after {timeout_s:.0f} s")
            time.sleep(0.1 if not in_flight else 0.05)
        wall = time.perf_counter() - t0
        finished = True
        states = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%T"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
    finally:
        if not finished and ids:
            subprocess.run(["scancel", *ids], check=False)
        shutil.rmtree(out_dir, ignore_errors=True)
    if in_flight:
        name, note = f"Slurm, straight, {in_flight} in flight", "sbatch as one ends (squeue every 50 ms)"
    else:
        name, note = "Slurm, straight (sbatch)", "N sbatch calls"
    return result(name, len(cmds), wall, states.count("COMPLETED"), accepted, note)


# -- Ray -------------------------------------------------------------------------------------------
def ray_straight(cmds: list[list[str]], timeout_s: float) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {RAY_TOKEN.read_text().strip()}"}
    with httpx.Client(base_url=RAY_API, timeout=60, trust_env=False, headers=auth) as http:
        t0 = time.perf_counter()
        ids = []
        for c in cmds:
            body = {
                "entrypoint": " ".join(c),
                "entrypoint_num_cpus": 1,
                "entrypoint_memory": MEM_MB * 1024 * 1024,
            }
            r = http.post("/api/jobs/", json=body)
            r.raise_for_status()
            ids.append(r.json()["submission_id"])
        accepted = time.perf_counter() - t0
        want = set(ids)
        while True:
            jobs = {
                j["submission_id"]: j["status"]
                for j in http.get("/api/jobs/").json()
                if j.get("submission_id") in want
            }
            ended = [s for s in jobs.values() if s in ("SUCCEEDED", "FAILED", "STOPPED")]
            if len(ended) == len(ids):
                break
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"Ray: {len(ids) - len(ended)} job(s) not ended after {timeout_s:.0f} s")
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        for sid in ids:
            with contextlib.suppress(httpx.HTTPError):
                http.delete(f"/api/jobs/{sid}")
    return result(
        "Ray, straight (job API)", len(cmds), wall, ended.count("SUCCEEDED"), accepted, "N POST /api/jobs/"
    )


def ray_cmd(*args: str) -> list[str]:
    return ["bash", str(REPO / "scripts/ray.sh"), *args]


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this many seconds")
    ap.add_argument("--skip-slurm", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-local", action="store_true")
    ap.add_argument("--skip-worker", action="store_true", help="no run through a region worker")
    ap.add_argument("--skip-throttled", action="store_true", help="no Slurm run with N-CPUs jobs in flight")
    args = ap.parse_args()
    # This checkout's code, whatever `pip install -e` points at.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
    )
    cmds = workload(args.jobs, args.seed)
    if os.geteuid() != 0 and not (args.skip_slurm and args.skip_ray):
        sys.exit("run as root (Slurm and the Ray namespace need it), or pass --skip-slurm --skip-ray")

    print(f"command: python {' '.join(sys.argv)}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"machine: {machine()}")
    print(f"code: {git_state()}")
    n_sleep = sum(1 for c in cmds if c[0] == "sleep")
    print(f"workload: {args.jobs} jobs (seed {args.seed}): {args.jobs - n_sleep} x `true`, {n_sleep} x `sleep 1`; "
          f"ideal makespan on {os.cpu_count()} CPUs >= {n_sleep / (os.cpu_count() or 1):.1f} s", flush=True)  # fmt: skip

    results: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []

    def done(r: dict[str, Any]) -> dict[str, Any]:
        results.append(r)
        print(f"  {r['system']}: {r['wall_s']:.2f} s, {r['ok']}/{r['n']} ok "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
        return r

    if not args.skip_local:
        done(local_straight(cmds))
        done(enclave_run(cmds, "gov-east", args.timeout))
        pairs.append(("Enclave, gov-east", "local processes, straight"))
    if not args.skip_worker:
        if not any(r["system"] == "local processes, straight" for r in results):
            done(local_straight(cmds))
        done(enclave_run(cmds, "ts-east", args.timeout, fleet=WORKER_FLEET, worker=True))
        pairs.append(("Enclave, ts-east via its region worker", "local processes, straight"))

    if not args.skip_slurm:
        started = not slurm_running()
        if started:
            subprocess.run(["bash", str(REPO / "scripts/slurm.sh"), "start"], check=True)
        try:
            print(
                f"slurm config (scontrol show config, excerpt):\n  {slurm_config().replace(chr(10), chr(10) + '  ')}"
            )
            done(enclave_run(cmds, "secret-west", args.timeout))
            done(slurm_straight(cmds, args.timeout))
            pairs.append(("Enclave, secret-west", "Slurm, straight (sbatch)"))
            if not args.skip_throttled:
                cpus = os.cpu_count() or 1
                done(slurm_straight(cmds, args.timeout, in_flight=cpus))
                pairs.append(("Enclave, secret-west", f"Slurm, straight, {cpus} in flight"))
        finally:
            if started:
                subprocess.run(["bash", str(REPO / "scripts/slurm.sh"), "stop"], check=False)

    if not args.skip_ray:
        env = dict(os.environ, ENCLAVE_RAY_NETNS=RAY_NS, PYTHON=sys.executable)
        started = subprocess.run(ray_cmd("status"), env=env, capture_output=True).returncode != 0
        if started:
            subprocess.run(ray_cmd("start"), env=env, check=True)
        try:
            done(enclave_run(cmds, "ts-east", args.timeout))
            done(ray_straight(cmds, args.timeout))
            pairs.append(("Enclave, ts-east", "Ray, straight (job API)"))
        finally:
            if started:
                subprocess.run(ray_cmd("stop"), env=env, check=False)

    rows = [
        [
            r["system"],
            r["n"],
            r["ok"],
            f"{r['accepted_s']:.2f}",
            f"{r['wall_s']:.2f}",
            f"{r['n'] / r['wall_s']:.2f}",
        ]
        for r in results
    ]
    print_table(
        f"{args.jobs} jobs (half `true`, half `sleep 1`, 1 CPU each), first submission to last completion",
        ["system", "jobs", "completed ok", "submitted in s", "wall s", "jobs/s"],
        rows,
    )
    by = {r["system"]: r for r in results}
    over = []
    for enc, eng in pairs:
        a, b = by[enc], by[eng]
        over.append([
            enc, eng, f"{(a['wall_s'] - b['wall_s']) / a['n'] * 1000:.0f}",
            f"{(a['wall_s'] / b['wall_s'] - 1) * 100:+.1f}%",
            "yes" if a["wall_s"] <= 1.10 * b["wall_s"] else "no",
        ])  # fmt: skip
    print_table(
        "Enclave's added overhead vs the engine alone",
        ["Enclave run", "engine alone", "added ms/job", "wall vs engine", "within 10%"],
        over,
    )
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
