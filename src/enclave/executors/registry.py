"""The table of executor back ends and the one function that builds a region's executor."""

from __future__ import annotations

from pathlib import Path

from enclave.errors import InvalidInput
from enclave.executors.base import Executor
from enclave.executors.local import LocalExecutor
from enclave.fleet import Region


def make_executor(region: Region, sandbox_root: Path) -> Executor:
    backend = region.backend.type
    if backend == "local":
        return LocalExecutor(sandbox_root)
    if backend == "slurm":
        from enclave.executors.slurm import SlurmExecutor

        return SlurmExecutor(sandbox_root, region.backend)
    if backend == "ray":
        from enclave.executors.ray_exec import RayExecutor

        return RayExecutor(sandbox_root, region.backend)
    raise InvalidInput(f"region {region.name}: back end {backend!r} is not available in this build")
