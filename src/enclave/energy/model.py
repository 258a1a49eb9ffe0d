"""Per-job energy, carbon and cost (pure).

Modelled energy splits a node's draw into idle and busy parts: a job is charged its share of
the nodes' idle draw for its wall time (by CPUs, or GPUs on GPU nodes) plus the busy draw
for the CPU-seconds it actually used. Facility energy applies the region's PUE; carbon uses
the region's grid intensity; cost the region's price. Measured energy (RAPL, NVML, Slurm
accounting) replaces the IT part when a measurement exists; the report says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from enclave.fleet import NodePool, Region

J_PER_KWH = 3.6e6
HOMES_KWH_PER_YEAR = 10_500.0  # average US household


class EnergySource(StrEnum):
    MEASURED = "measured"
    MODELLED = "modelled"


@dataclass(frozen=True)
class Usage:
    """What a job used: wall time on its nodes and CPU (and GPU) busy time."""

    nodes: int
    cpus_per_node: int
    gpus_per_node: int
    wall_s: float
    cpu_s: float
    gpu_s: float = 0.0


@dataclass(frozen=True)
class Energy:
    kwh: float  # facility energy (PUE applied)
    it_kwh: float
    kgco2e: float
    cost: float
    source: EnergySource

    def as_dict(self) -> dict[str, float | str]:
        return {
            "kwh": round(self.kwh, 9),
            "it_kwh": round(self.it_kwh, 9),
            "kgco2e": round(self.kgco2e, 9),
            "cost": round(self.cost, 9),
            "source": str(self.source),
        }


def modelled_it_joules(pool: NodePool, use: Usage) -> float:
    """Idle share for the wall time plus busy draw for the work actually done."""
    if pool.gpus and use.gpus_per_node:
        share = min(1.0, use.gpus_per_node / pool.gpus)
        # Without GPU counters a GPU job is taken as busy for its whole wall time.
        gpu_busy_s = use.gpu_s or use.gpus_per_node * use.nodes * use.wall_s
        busy_j = (pool.peak_w - pool.idle_w) / pool.gpus * gpu_busy_s
    else:
        share = min(1.0, use.cpus_per_node / pool.cpus)
        busy_j = (pool.peak_w - pool.idle_w) / pool.cpus * use.cpu_s
    idle_j = pool.idle_w * share * use.nodes * use.wall_s
    return idle_j + busy_j


def account(region: Region, it_joules: float, source: EnergySource) -> Energy:
    it_kwh = max(0.0, it_joules) / J_PER_KWH
    kwh = it_kwh * region.pue
    return Energy(
        kwh=kwh,
        it_kwh=it_kwh,
        kgco2e=kwh * region.carbon_g_per_kwh / 1000.0,
        cost=kwh * region.price_per_kwh,
        source=source,
    )


def homes_equivalent(kwh_per_year: float) -> float:
    return kwh_per_year / HOMES_KWH_PER_YEAR
