"""The table of executor back ends and the functions that build a region's executor."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from enclave.errors import InvalidInput
from enclave.executors.base import Executor
from enclave.executors.local import LocalExecutor
from enclave.fleet import Region


def make_engine_executor(region: Region, sandbox_root: Path, hidden: tuple[Path, ...] = ()) -> Executor:
    """The executor that drives the region's engine itself (local processes, Slurm, Ray).
    ``hidden``: what no job may see even where a system mount would show it (ENCLAVE_HOME)."""
    backend = region.backend.type
    if backend == "local":
        scratch = Path(region.backend.scratch) if region.backend.scratch else None
        return LocalExecutor(
            sandbox_root, network=region.backend.network == "host", hidden=hidden, scratch=scratch
        )
    if backend == "slurm":
        from enclave.executors.slurm import SlurmExecutor

        return SlurmExecutor(sandbox_root, region.backend, hidden=hidden)
    if backend == "ray":
        from enclave.executors.ray_exec import RayExecutor

        return RayExecutor(sandbox_root, region.backend, hidden=hidden)
    raise InvalidInput(f"region {region.name}: back end {backend!r} is not available in this build")


def make_executor(
    region: Region,
    sandbox_root: Path,
    store: sessionmaker[Session],
    reads: sessionmaker[Session],
    clock: Callable[[], datetime],
) -> Executor:
    """The control plane's executor for a region: the engine's own, or — for a region run by
    a region worker — the dispatch mailbox that worker reads from the store (``store`` for
    changes, ``reads`` for read-only sessions that never wait on a writer)."""
    if region.backend.worker:
        from enclave.executors.dispatch import DispatchExecutor

        return DispatchExecutor(region, store, reads, sandbox_root.parent / "worker-logs", clock)
    return make_engine_executor(region, sandbox_root, hidden=(sandbox_root.parent,))
