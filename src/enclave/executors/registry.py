"""The table of executor back ends and the functions that build a region's executor."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from enclave.errors import InvalidInput
from enclave.executors.base import Executor
from enclave.fleet import Region

# Engine back ends by fleet ``backend.type``: module and class, imported on first use (Slurm's
# and Ray's executors are not loaded where no region uses them). Each takes
# ``(sandbox_root, backend settings, hidden)``.
ENGINES: dict[str, tuple[str, str]] = {
    "local": ("enclave.executors.local", "LocalExecutor"),
    "slurm": ("enclave.executors.slurm", "SlurmExecutor"),
    "ray": ("enclave.executors.ray_exec", "RayExecutor"),
}


def make_engine_executor(region: Region, sandbox_root: Path, hidden: tuple[Path, ...] = ()) -> Executor:
    """The executor that drives the region's engine itself (local processes, Slurm, Ray).
    ``hidden``: what no job may see even where a system mount would show it (ENCLAVE_HOME)."""
    engine = ENGINES.get(region.backend.type)
    if engine is None:
        raise InvalidInput(
            f"region {region.name}: back end {region.backend.type!r} is not available in this build"
        )
    module, name = engine
    cls = getattr(importlib.import_module(module), name)
    executor: Executor = cls(sandbox_root, region.backend, hidden=hidden)
    return executor


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
