"""Reading real energy counters where the machine exposes them.

Linux RAPL (``/sys/class/powercap/intel-rapl:*/energy_uj``) counts package energy in µJ and
wraps at ``max_energy_range_uj``. A job's share of a package reading is its CPU-time share
over the same interval, which is how the live loop attributes it. NVML is used when the
``pynvml`` module and a GPU exist (device machines), else skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplZone:
    energy: Path
    max_range_uj: int


def rapl_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """Top-level package zones that are readable by this process."""
    zones = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue  # sub-zones (core, uncore) are inside the package counter
        energy = zone / "energy_uj"
        try:
            int(energy.read_text())
            max_range = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        zones.append(RaplZone(energy, max_range))
    return zones


def read_uj(zones: list[RaplZone]) -> list[int] | None:
    try:
        return [int(z.energy.read_text()) for z in zones]
    except (OSError, ValueError):
        return None


def delta_j(zones: list[RaplZone], before: list[int], after: list[int]) -> float:
    total = 0
    for zone, b, a in zip(zones, before, after, strict=True):
        total += a - b if a >= b else a + zone.max_range_uj - b  # the counter wrapped
    return total / 1e6
