"""Digital-twin benchmarks: speed and agreement versus AccaSim, and scale.

    python benchmarks/bench_sim.py                          # both parts
    python benchmarks/bench_sim.py --part accasim --runs 3
    python benchmarks/bench_sim.py --part scale --jobs 1000000 --days 30

**(a) AccaSim** (PyPI ``accasim==1.1.3``, ``EASYBackfilling(FirstFit())``) and Enclave's EASY
replay the same SWF trace (default KTH-SP2: 100 processors, users' requested times as the
estimates) in the same run. AccaSim runs in a child process (its logger threads and files
stay out of ours); it is given cores only (``{"core": 1}`` × MaxProcs nodes — with a
``mem`` resource and SWF memory fields of −1 its EASY divides by zero) and Python 3.10's
removed ``collections.Mapping`` & co. are aliased to ``collections.abc`` before it is
imported. Wall time is measured inside each process around the same work: building the
simulator from the trace file, simulating, and the metrics (for AccaSim: its constructor,
``start_simulation`` and parsing its dispatching-plan file). Both sets of metrics are computed
by one function from each simulator's start and end times: avg wait, avg bounded slowdown
``max(1, (wait + run) / max(10, run))`` and utilization ``Σ run × processors /
(MaxProcs × (last end − first submit))``. Targets: ≥ 20× faster, metrics within 15%.

**(b) Scale**: the seeded synthetic AI + HPC generator (:mod:`enclave.sim.synthetic`)
makes ``--jobs`` jobs over ``--days`` simulated days for the ``gigawatt`` fleet, and EASY
replays them. A child process pinned to ``--cpus`` CPUs (default 2) reports generation time,
simulation time, simulated jobs per second and peak memory (``ru_maxrss`` of the child:
everything, the jobs included). Targets: ≤ 60 s and ≤ 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, git_state, machine, median, print_table

TRACE = REPO.parent / "shared" / "data" / "traces" / "KTH-SP2-1996-2.1.swf"
TAU_S = 10.0
SPEED_TARGET = 20.0
AGREEMENT_TARGET = 0.15
SCALE_TIME_TARGET_S = 60.0
SCALE_MEMORY_TARGET_GIB = 4.0


def schedule_metrics(jobs: list[tuple[float, float, float, int]], procs: int) -> dict[str, float]:
    """(submit, start, end, processors) per job -> the three figures, one formula for both."""
    n = len(jobs)
    waits = [start - submit for submit, start, _end, _p in jobs]
    bsld = [max(1.0, (w + (end - start)) / max(TAU_S, end - start)) for w, (_s, start, end, _p) in zip(waits, jobs, strict=True)]  # fmt: skip
    first = min(submit for submit, *_ in jobs)
    last = max(end for _s, _st, end, _p in jobs)
    work = sum((end - start) * p for _s, start, end, p in jobs)
    return {
        "jobs": n,
        "avg_wait_s": sum(waits) / n,
        "avg_bounded_slowdown": sum(bsld) / n,
        "utilization": work / (procs * (last - first)),
    }


# -- (a) Enclave and AccaSim on one trace --------------------------------------------------------
def enclave_run(trace: Path) -> dict[str, object]:
    """One timed Enclave EASY replay of the trace (load, simulate, metrics)."""
    from enclave.scheduler.policies import make_policy
    from enclave.sim.engine import simulate
    from enclave.sim.workloads import workload_and_fleet

    c0, t0 = time.process_time(), time.perf_counter()
    workload, fleet = workload_and_fleet(trace)
    outcome = simulate(fleet, workload.jobs, make_policy("easy"))
    jobs = [(r.sim.job.submit_s, r.start_s, r.end_s, r.sim.job.nodes) for r in outcome.runs]
    metrics = schedule_metrics(jobs, workload.max_procs or 1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "skipped": workload.skipped, **metrics}


ACCASIM_CHILD = r"""
import collections, collections.abc, json, sys, time
for _name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
    setattr(collections, _name, getattr(collections.abc, _name))
trace, procs, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
from accasim.base.simulator_class import Simulator
from accasim.base.scheduler_class import EASYBackfilling
from accasim.base.allocator_class import FirstFit
config = folder + "/sys.json"
with open(config, "w") as fh:
    json.dump({"groups": {"g0": {"core": 1}}, "resources": {"g0": procs},
               "equivalence": {"processor": {"core": 1}}, "start_time": 0}, fh)
t1, c1 = time.perf_counter(), time.process_time()
sim = Simulator(trace, config, EASYBackfilling(FirstFit()), RESULTS_FOLDER_PATH=folder + "/results",
                show_statistics=False, LOG_LEVEL="WARNING")
files = sim.start_simulation()
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "simulate_s": t2 - t1, "cpu_s": c2 - c1, "sched": files["sched-"]}))
"""


def accasim_run(trace: Path, procs: int) -> dict[str, object]:
    """AccaSim's EASY on the trace, in a child; metrics from its dispatching plan."""
    with tempfile.TemporaryDirectory(prefix="accasim-") as folder:
        out = subprocess.run(
            [sys.executable, "-c", ACCASIM_CHILD, str(trace), str(procs), folder],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"AccaSim failed (pip install accasim==1.1.3?):\n{out.stderr[-3000:]}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        c0, t0 = time.process_time(), time.perf_counter()
        jobs = _read_accasim_plan(Path(child["sched"]), trace)
        metrics = schedule_metrics(jobs, procs)
        parse_s, parse_cpu = time.perf_counter() - t0, time.process_time() - c0
    wall = child["simulate_s"] + parse_s
    return {"wall_s": wall, "cpu_s": child["cpu_s"] + parse_cpu, "import_s": child["import_s"], **metrics}


def _read_accasim_plan(path: Path, trace: Path) -> list[tuple[float, float, float, int]]:
    """``id;user;queued__nodes__start;end;nodes;cores;mem;expected;`` lines, UTC datetimes at
    one-second resolution; the submit time is the trace's (exact)."""
    from enclave.sim.swf import read_table

    _header, table = read_table(trace)
    submit = {int(row[0]): float(row[1]) - float(table[0, 1]) for row in table}
    jobs = []
    for line in path.read_text().splitlines():
        head, _nodes, tail = line.split("__")
        job_id = int(head.split(";")[0])
        start_text, end_text, _n, cores, *_rest = tail.split(";")
        start, end = _epoch(start_text), _epoch(end_text)
        jobs.append((submit[job_id], start, end, int(cores)))
    return jobs


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def part_accasim(trace: Path, runs: int) -> None:
    from enclave.sim.swf import read_table

    header, _table = read_table(trace)
    procs = int(header.get("MaxProcs", "0").split()[0] or 0)
    print(f"\n(a) EASY on {trace.name} ({procs} processors): Enclave x{runs}, then AccaSim", flush=True)
    ours = [enclave_run(trace) for _ in range(runs)]
    walls = [float(str(r["wall_s"])) for r in ours]
    mine = ours[0]
    print(f"  enclave: {', '.join(f'{w:.2f}' for w in walls)} s", flush=True)
    theirs = accasim_run(trace, procs)
    print(f"  accasim: {theirs['wall_s']:.2f} s (+{theirs['import_s']:.2f} s imports)", flush=True)
    ratio = float(str(theirs["wall_s"])) / median(walls)
    cpus = [float(str(r["cpu_s"])) for r in ours]
    cpu_ratio = float(str(theirs["cpu_s"])) / median(cpus)
    rows = [["wall s (median)", f"{median(walls):.2f}", f"{theirs['wall_s']:.2f}", f"{ratio:.1f}x faster",
             "yes" if ratio >= SPEED_TARGET else "NO"],
            ["CPU s (median)", f"{median(cpus):.2f}", f"{theirs['cpu_s']:.2f}", f"{cpu_ratio:.1f}x less", ""]]  # fmt: skip
    for key in ("jobs", "avg_wait_s", "avg_bounded_slowdown", "utilization"):
        a, b = float(str(mine[key])), float(str(theirs[key]))
        diff = (a - b) / b if b else 0.0
        shown = "{:,.0f}" if key == "jobs" else "{:,.3f}"
        ok = "yes" if abs(diff) <= AGREEMENT_TARGET else "NO"
        rows.append([key, shown.format(a), shown.format(b), f"{diff:+.1%}", ok])
    print_table(
        f"Enclave EASY vs AccaSim 1.1.3 EASYBackfilling(FirstFit()) on {trace.name}",
        ["figure", "enclave", "accasim", "enclave vs accasim", "within target"],
        rows,
    )


# -- (b) scale ----------------------------------------------------------------------------------------
SCALE_CHILD = r"""
import json, os, resource, sys, time
cpus, jobs, days, seed = (int(a) if i != 2 else float(a) for i, a in enumerate(sys.argv[1:5]))
if cpus > 0 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
from enclave.fleet import load_fleet
from enclave.scheduler.policies import make_policy
from enclave.sim.engine import simulate
from enclave.sim.metrics import summarize
from enclave.sim.synthetic import SyntheticSpec, generate
fleet = load_fleet("gigawatt")
t0 = time.perf_counter()
workload = generate(SyntheticSpec(jobs=jobs, days=days, seed=seed), fleet.scheme)
t1 = time.perf_counter()
outcome = simulate(fleet, workload.jobs, make_policy("easy"))
t2 = time.perf_counter()
summary = summarize(fleet, outcome)
t3 = time.perf_counter()
print(json.dumps({
    "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    "generate_s": t1 - t0, "simulate_s": t2 - t1, "summarize_s": t3 - t2,
    "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "passes": outcome.passes, "samples": len(outcome.power),
    **{k: summary[k] for k in ("jobs", "jobs_never_started", "avg_wait_s", "utilization", "makespan_s",
                               "power_cap_violations", "energy_mwh", "emissions_tco2e")},
}))
"""


def part_scale(jobs: int, days: float, seed: int, cpus: int) -> None:
    print(
        f"\n(b) scale: {jobs:,} synthetic jobs over {days:g} days on gigawatt, EASY, {cpus} CPUs", flush=True
    )
    out = subprocess.run(
        [sys.executable, "-c", SCALE_CHILD, str(cpus), str(jobs), str(days), str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"scale run failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    total = r["generate_s"] + r["simulate_s"] + r["summarize_s"]
    rows = [
        ["generate (synthetic)", f"{r['generate_s']:.1f} s", ""],
        ["simulate (EASY)", f"{r['simulate_s']:.1f} s", f"{r['jobs'] / r['simulate_s']:,.0f} jobs/s"],
        ["metrics", f"{r['summarize_s']:.1f} s", ""],
        ["total", f"{total:.1f} s", "yes" if total <= SCALE_TIME_TARGET_S else "NO (target 60 s)"],
        ["peak memory (maxrss)", f"{r['maxrss_gib']:.2f} GiB",
         "yes" if r["maxrss_gib"] <= SCALE_MEMORY_TARGET_GIB else "NO (target 4 GiB)"],
        ["passes / power samples", f"{r['passes']:,} / {r['samples']:,}", ""],
        ["jobs run / never started", f"{r['jobs']:,} / {r['jobs_never_started']:,}", ""],
        ["avg wait, utilization", f"{r['avg_wait_s']:,.0f} s, {r['utilization']:.1%}", ""],
        ["simulated span", f"{r['makespan_s'] / 86400:.1f} days", ""],
        ["cap violations", f"{r['power_cap_violations']}", ""],
    ]  # fmt: skip
    print_table(
        f"Scale: {jobs:,} jobs, {days:g} days, gigawatt, EASY, {r['cpus']} CPUs",
        ["", "figure", "target"],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "accasim", "scale"], default="all")
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--runs", type=int, default=3, help="Enclave repetitions on the trace (median)")
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs the scale run is pinned to (0: all)")
    args = ap.parse_args()
    print(f"machine: {machine()}", flush=True)
    print(f"code: {git_state()}", flush=True)
    if args.part in ("all", "accasim"):
        part_accasim(args.trace, args.runs)
    if args.part in ("all", "scale"):
        part_scale(args.jobs, args.days, args.seed, args.cpus)
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
