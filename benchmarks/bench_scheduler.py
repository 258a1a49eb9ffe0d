"""Wall time of one scheduling pass with 100,000 pending jobs on the `gigawatt` fleet.

    python benchmarks/bench_scheduler.py
    python benchmarks/bench_scheduler.py --jobs 100000 --runs 5 --seed 1

For each policy (fcfs, easy, priority) and two situations:

* empty fleet: the first pass over the queue on an idle fleet (many jobs start);
* saturated fleet: the second pass, on the state the first pass left (little or nothing fits).

Only `schedule(state, queue, now, policy)` is timed; building the queue and the state is
not. Wall time is the figure; the pass's CPU time (thread_time) is shown beside it, as
other load on the machine inflates wall time but not CPU time. Each run builds a fresh ClusterState (and, for the saturated case, replays the first
pass untimed). The queue is a seeded random mix of GPU jobs (8 GPUs per node, nodes in
{1, 2, 4, 8, 16, 64}) and CPU jobs, labels across UNCLASSIFIED / CUI / SECRET /
TOP SECRET//SI, in submission order. Reported: the median of --runs runs (and min/max).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import git_state, machine, median, print_table

from enclave.fleet import load_fleet
from enclave.scheduler.capacity import ClusterState
from enclave.scheduler.core import schedule
from enclave.scheduler.model import QOS, Job
from enclave.scheduler.policies import make_policy

LABELS = [("UNCLASSIFIED", 0.4), ("CUI", 0.3), ("SECRET", 0.2), ("TOP SECRET//SI", 0.1)]
GPU_NODES = [1, 2, 4, 8, 16, 64]
GPU_NODE_WEIGHTS = [0.35, 0.2, 0.15, 0.12, 0.1, 0.08]
AGENCIES = ["nasa", "doe", "noaa", "nih", "dod", "nsf"]
NOW = 1_800_000_000.0


def make_queue(n: int, seed: int) -> list[Job]:
    fleet = load_fleet("gigawatt")
    scheme = fleet.scheme
    labels = [scheme.parse(m) for m, _ in LABELS]
    weights = [w for _, w in LABELS]
    rng = random.Random(seed)
    queue = []
    submit = NOW - n * 0.5  # one submission every half second, the last one just now
    for i in range(n):
        submit += rng.expovariate(2.0) if i else 0.0
        label = rng.choices(labels, weights)[0]
        if rng.random() < 0.7:  # GPU job: whole 8-GPU nodes
            nodes = rng.choices(GPU_NODES, GPU_NODE_WEIGHTS)[0]
            cpus, memory_mb, gpus = 96, 1_500_000, 8
        else:  # CPU job: a slice of a node, or a few whole nodes
            nodes = rng.choice([1, 1, 1, 2, 4])
            cpus = rng.choice([1, 4, 16, 32, 64, 128])
            memory_mb, gpus = cpus * 2048, 0
        queue.append(
            Job(
                id=f"job-{i:06d}",
                agency=rng.choice(AGENCIES),
                label=label,
                nodes=nodes,
                cpus=cpus,
                memory_mb=memory_mb,
                gpus=gpus,
                walltime_s=float(rng.choice([600, 3600, 4 * 3600, 12 * 3600, 48 * 3600])),
                submit_s=min(submit, NOW),
                qos=rng.choices([QOS.LOW, QOS.NORMAL, QOS.HIGH], [0.2, 0.7, 0.1])[0],
                seq=i + 1,
            )
        )
    return queue


def one_run(policy_name: str, queue: list[Job], saturated: bool) -> tuple[float, float, int, int]:
    """Wall and CPU seconds of the timed pass, jobs it started, jobs it left pending."""
    fleet = load_fleet("gigawatt")
    state = ClusterState.from_fleet(fleet)
    policy = make_policy(policy_name)
    now = NOW
    if saturated:
        first = schedule(state, queue, now, policy)
        started = {j.id for j, _ in first.started}
        queue = [j for j in queue if j.id not in started]
        now += 1.0
    gc.collect()
    c0, t0 = time.thread_time(), time.perf_counter()
    result = schedule(state, queue, now, policy)
    took, cpu = time.perf_counter() - t0, time.thread_time() - c0
    return took, cpu, len(result.started), len(result.reasons)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policies", default="fcfs,easy,priority")
    args = ap.parse_args()

    print(f"machine: {machine()}", flush=True)
    print(f"code: {git_state()}", flush=True)
    queue = make_queue(args.jobs, args.seed)
    gpu = sum(1 for j in queue if j.gpus)
    fleet = load_fleet("gigawatt")
    print(
        f"queue: {len(queue):,} jobs ({gpu:,} GPU, {len(queue) - gpu:,} CPU), seed {args.seed}; "
        f"fleet gigawatt: {sum(r.nodes for r in fleet.regions):,} nodes, "
        f"{sum(r.gpus for r in fleet.regions):,} GPUs, {len(fleet.regions)} regions",
        flush=True,
    )
    rows = []
    for name in args.policies.split(","):
        for saturated in (False, True):
            times, cpus, started, pending = [], [], 0, 0
            for _ in range(args.runs):
                took, cpu, started, pending = one_run(name, queue, saturated)
                times.append(took)
                cpus.append(cpu)
            med = median(times)
            rows.append(
                [
                    name,
                    "saturated (2nd pass)" if saturated else "empty fleet (1st pass)",
                    f"{med * 1000:.1f}",
                    f"{min(times) * 1000:.1f}",
                    f"{max(times) * 1000:.1f}",
                    f"{median(cpus) * 1000:.1f}",
                    f"{started:,}",
                    f"{pending:,}",
                    "yes" if med <= 0.1 else "NO",
                ]
            )
            print(
                f"  {name:8s} {'saturated' if saturated else 'empty':9s} median {med * 1000:.1f} ms",
                flush=True,
            )
    print_table(
        f"One scheduling pass, {args.jobs:,} pending jobs, gigawatt fleet (median of {args.runs})",
        [
            "policy",
            "situation",
            "median ms",
            "min ms",
            "max ms",
            "CPU ms (median)",
            "started",
            "left pending",
            "<= 100 ms",
        ],
        rows,
    )
    print(f"\nmachine after: {machine()}")


if __name__ == "__main__":
    main()
