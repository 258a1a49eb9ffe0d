"""Small fleets and jobs for scheduler tests, written as TOML and parsed by ``parse_fleet``."""

from __future__ import annotations

from dataclasses import dataclass

from enclave.fleet import Fleet, parse_fleet
from enclave.labels import DEFAULT_SCHEME
from enclave.scheduler.model import QOS, Job


@dataclass(frozen=True)
class PoolSpec:
    name: str
    count: int
    cpus: int = 4
    memory_mb: int = 8192
    gpus: int = 0
    idle_w: float = 10.0
    peak_w: float = 110.0

    def toml(self) -> str:
        return (
            "[[regions.pools]]\n"
            f'name = "{self.name}"\n'
            f"count = {self.count}\n"
            f"cpus = {self.cpus}\n"
            f"memory_mb = {self.memory_mb}\n"
            f"gpus = {self.gpus}\n"
            f"idle_w = {self.idle_w!r}\n"
            f"peak_w = {self.peak_w!r}\n"
        )


@dataclass(frozen=True)
class RegionSpec:
    name: str
    pools: tuple[PoolSpec, ...]
    accreditation: str = "TOP SECRET//SI/TK/HCS/G"
    power_cap_mw: float = 1000.0  # far above any test fleet's peak: the cap does not bind
    pue: float = 1.2

    def toml(self) -> str:
        head = (
            "[[regions]]\n"
            f'name = "{self.name}"\n'
            f'accreditation = "{self.accreditation}"\n'
            f"power_cap_mw = {self.power_cap_mw!r}\n"
            f"pue = {self.pue!r}\n"
        )
        return head + "".join(p.toml() for p in self.pools)


def make_fleet(*regions: RegionSpec) -> Fleet:
    return parse_fleet('name = "test"\n' + "\n".join(r.toml() for r in regions), "test-fleet")


def one_pool_fleet(nodes: int, cpus: int = 4) -> Fleet:
    """The reference setting: one region, one pool of identical nodes, no binding power cap."""
    return make_fleet(RegionSpec("r1", (PoolSpec("p", nodes, cpus=cpus),)))


def make_job(
    job_id: str,
    *,
    nodes: int = 1,
    cpus: int = 4,
    memory_mb: int = 1024,
    gpus: int = 0,
    walltime_s: float = 10.0,
    submit_s: float = 0.0,
    qos: QOS = QOS.NORMAL,
    label: str = "UNCLASSIFIED",
    region: str | None = None,
    agency: str = "agency",
    seq: int = 0,
) -> Job:
    return Job(
        id=job_id,
        agency=agency,
        label=DEFAULT_SCHEME.parse(label),
        nodes=nodes,
        cpus=cpus,
        memory_mb=memory_mb,
        gpus=gpus,
        walltime_s=walltime_s,
        submit_s=submit_s,
        qos=qos,
        region=region,
        seq=seq,
    )
