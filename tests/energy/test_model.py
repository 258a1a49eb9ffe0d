"""The pure energy model: idle share plus busy draw, PUE, carbon and cost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.energy.model import EnergySource, Usage, account, homes_equivalent, modelled_it_joules
from enclave.fleet import load_fleet

GIGA = load_fleet("gigawatt")
GPU_POOL = GIGA.regions[0].pools[0]
CPU_POOL = GIGA.regions[0].pools[1]


def test_cpu_job_uses_idle_share_plus_cpu_seconds() -> None:
    use = Usage(nodes=2, cpus_per_node=64, gpus_per_node=0, wall_s=100.0, cpu_s=3200.0)
    expected = (
        CPU_POOL.idle_w * 0.5 * 2 * 100.0 + (CPU_POOL.peak_w - CPU_POOL.idle_w) / CPU_POOL.cpus * 3200.0
    )
    assert modelled_it_joules(CPU_POOL, use) == pytest.approx(expected)


def test_full_gpu_node_for_an_hour_is_its_peak() -> None:
    use = Usage(nodes=1, cpus_per_node=112, gpus_per_node=8, wall_s=3600.0, cpu_s=0.0)
    assert modelled_it_joules(GPU_POOL, use) / 3.6e6 == pytest.approx(GPU_POOL.peak_w / 1000.0)


@given(
    nodes=st.integers(1, 64),
    cpus=st.integers(1, 128),
    wall=st.floats(0, 1e6),
    busy=st.floats(0, 1),
)
def test_cpu_energy_bounded_by_idle_and_peak(nodes: int, cpus: int, wall: float, busy: float) -> None:
    """Between the nodes' idle share and their full peak for the wall time."""
    cpus = min(cpus, CPU_POOL.cpus)
    use = Usage(nodes, cpus, 0, wall, cpu_s=busy * cpus * nodes * wall)
    joules = modelled_it_joules(CPU_POOL, use)
    share = cpus / CPU_POOL.cpus
    assert CPU_POOL.idle_w * share * nodes * wall * (1 - 1e-9) <= joules
    assert joules <= CPU_POOL.peak_w * share * nodes * wall * (1 + 1e-9) + 1e-6


@given(joules=st.floats(0, 1e15))
def test_account_applies_pue_carbon_and_price(joules: float) -> None:
    region = GIGA.regions[1]
    energy = account(region, joules, EnergySource.MODELLED)
    assert energy.it_kwh == pytest.approx(joules / 3.6e6)
    assert energy.kwh == pytest.approx(energy.it_kwh * region.pue)
    assert energy.kgco2e == pytest.approx(energy.kwh * region.carbon_g_per_kwh / 1000)
    assert energy.cost == pytest.approx(energy.kwh * region.price_per_kwh)
    assert energy.as_dict()["source"] == "modelled"


def test_homes_equivalent() -> None:
    assert homes_equivalent(10_500.0 * 3) == pytest.approx(3.0)
