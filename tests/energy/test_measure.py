"""RAPL reading on a fake powercap tree (this machine kind exposes none), wrap-around included."""

from __future__ import annotations

from pathlib import Path

from enclave.energy import measure


def zone(root: Path, name: str, energy_uj: int, max_uj: int) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def test_reads_packages_and_handles_wrap(tmp_path: Path) -> None:
    # A test double stands in for /sys/class/powercap, which containers here do not expose.
    pkg0 = zone(tmp_path, "intel-rapl:0", 1_000_000, 10_000_000)
    zone(tmp_path, "intel-rapl:0:0", 5, 10)  # a sub-zone: inside the package counter, skipped
    pkg1 = zone(tmp_path, "intel-rapl:1", 9_500_000, 10_000_000)
    zones = measure.rapl_zones(tmp_path)
    assert [z.energy.parent.name for z in zones] == ["intel-rapl:0", "intel-rapl:1"]
    before = measure.read_uj(zones)
    (pkg0 / "energy_uj").write_text("3000000\n")
    (pkg1 / "energy_uj").write_text("500000\n")  # wrapped past 10 J
    after = measure.read_uj(zones)
    assert before is not None and after is not None
    assert measure.delta_j(zones, before, after) == 2.0 + 1.0


def test_unreadable_zones_are_skipped(tmp_path: Path) -> None:
    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "energy_uj").write_text("not a number")
    assert measure.rapl_zones(tmp_path) == []
    assert measure.rapl_zones(tmp_path / "missing") == []
