"""Hypothesis strategies: small random fleets (several pools and regions, labels, power caps)
and workloads (shared sub-node, whole-node and multi-node jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from enclave.fleet import Fleet
from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.model import QOS

from .driver import Work
from .factory import PoolSpec, RegionSpec, make_fleet, make_job

MARKINGS = ("UNCLASSIFIED", "CUI", "SECRET", "SECRET//SI", "TOP SECRET", "TOP SECRET//SI/TK")
ACCREDITATIONS = ("CUI", "SECRET", "SECRET//SI", "TOP SECRET//SI/TK")
TOP = "TOP SECRET//SI/TK/HCS/G"


@dataclass(frozen=True)
class Scenario:
    fleet: Fleet
    work: list[Work]


@st.composite
def region_specs(
    draw: st.DrawFn, name: str, tight_power: bool, labelled: bool, min_pools: int = 1
) -> RegionSpec:
    pools = []
    for p in range(draw(st.integers(min_pools, 2))):
        idle = draw(st.integers(0, 50))
        pools.append(
            PoolSpec(
                name=f"p{p}",
                count=draw(st.integers(1, 3)),
                cpus=draw(st.sampled_from([2, 3, 4, 6, 8])),  # thirds: shares not exact in binary
                memory_mb=8192,
                gpus=draw(st.sampled_from([0, 2, 2, 3])),
                idle_w=float(idle),
                peak_w=idle + draw(st.integers(100, 2000)) / 10,
            )
        )
    pue = draw(st.sampled_from([1.0, 1.1, 1.25]))
    cap_mw = 1000.0
    if tight_power and draw(st.integers(0, 3)) > 0:  # mostly tight, sometimes loose
        idle_w = sum(p.count * p.idle_w for p in pools)
        peak_w = sum(p.count * p.peak_w for p in pools)
        fraction = draw(st.integers(1, 20)) / 20  # of the busy range the cap leaves room for
        cap_mw = (idle_w + fraction * (peak_w - idle_w)) * pue / 1e6
    accreditation = draw(st.sampled_from(ACCREDITATIONS)) if labelled else TOP
    return RegionSpec(name, tuple(pools), accreditation, cap_mw, pue)


@st.composite
def shapes(
    draw: st.DrawFn, regions: list[RegionSpec], labelled: bool, name_regions: bool
) -> tuple[int, int, int, int, str, str | None]:
    """Mostly a shape made for one pool of the fleet (so that jobs contend rather than never
    run), sometimes any shape at all (too big, or a label no region may run)."""
    kind = draw(st.sampled_from(["shared", "whole", "multi"]))
    memory_mb = draw(st.sampled_from([512, 2048, 4096, 8192]))
    region = draw(st.sampled_from(regions))
    region_name = region.name if name_regions and draw(st.integers(0, 3)) == 0 else None
    if draw(st.integers(0, 9)) == 0:  # anything
        nodes = draw(st.integers(2, 4)) if kind == "multi" else 1
        cpus = draw(st.integers(1, 3)) if kind == "shared" else draw(st.sampled_from([2, 3, 4, 6]))
        gpus = draw(st.sampled_from([0, 1, 2, 3]))
        label = draw(st.sampled_from(MARKINGS)) if labelled else "UNCLASSIFIED"
        return nodes, cpus, gpus, memory_mb, label, region_name
    pool = draw(st.sampled_from(region.pools))
    nodes = draw(st.integers(2, max(2, pool.count))) if kind == "multi" else 1
    if kind == "shared" and pool.cpus > 1:
        cpus = draw(st.integers(1, pool.cpus - 1))
        gpus = draw(st.integers(0, max(0, pool.gpus - 1)))
    else:
        cpus = pool.cpus if kind == "whole" else draw(st.integers(1, pool.cpus))
        gpus = draw(st.integers(0, pool.gpus))
    label = "UNCLASSIFIED"
    if labelled:
        accreditation = DEFAULT_SCHEME.parse(region.accreditation)
        allowed = [m for m in MARKINGS if accreditation.dominates(DEFAULT_SCHEME.parse(m))]
        label = draw(st.sampled_from(allowed))
    return nodes, cpus, gpus, memory_mb, label, region_name


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    max_regions: int = 2,
    max_jobs: int = 15,
    tight_power: bool = False,
    labelled: bool = False,
    exact: bool = False,
    name_regions: bool = False,
    min_pools: int = 1,
) -> Scenario:
    """A fleet and jobs in submission order. ``exact``: runtimes equal walltimes."""
    n_regions = draw(st.integers(1, max_regions))
    regions = [draw(region_specs(f"r{i}", tight_power, labelled, min_pools)) for i in range(n_regions)]
    fleet = make_fleet(*regions)
    # Jobs are drawn from a small palette of shapes, so that jobs of one shape meet in a pass
    # (the core caches per shape what it learnt about a shape).
    palette = []
    for _ in range(draw(st.integers(1, 4))):
        nodes, cpus, gpus, memory_mb, label, region = draw(shapes(regions, labelled, name_regions))
        palette.append((nodes, cpus, gpus, memory_mb, label, region))
    rows = []
    for _ in range(draw(st.integers(min(4, max_jobs), max_jobs))):
        nodes, cpus, gpus, memory_mb, label, region = draw(st.sampled_from(palette))
        walltime = draw(st.integers(1, 20))
        runtime = walltime if exact else draw(st.integers(1, walltime))
        submit = draw(st.integers(0, 10))  # close together: jobs contend
        rows.append((submit, nodes, cpus, gpus, memory_mb, walltime, runtime, label, region))
    rows.sort(key=lambda r: r[0])
    work = [
        Work(
            make_job(
                f"j{i}",
                nodes=nodes,
                cpus=cpus,
                memory_mb=memory_mb,
                gpus=gpus,
                walltime_s=float(walltime),
                submit_s=float(submit),
                qos=QOS.NORMAL,
                label=label,
                region=region,
                agency=f"agency{i % 3}",
                seq=i,
            ),
            float(runtime),
        )
        for i, (submit, nodes, cpus, gpus, memory_mb, walltime, runtime, label, region) in enumerate(rows)
    ]
    return Scenario(fleet, work)
