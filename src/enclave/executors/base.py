"""The executor interface: start, poll, cancel, logs.

A *handle* is a JSON-serialisable dict the executor returns from ``start`` and gets back on
every later call; the control plane stores it with the job, so a restarted server can poll,
cancel or read the logs of work started by its previous incarnation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

Handle = dict[str, Any]


@dataclass(frozen=True)
class Mount:
    """A host path a confined job sees, at the same path: its staged inputs (read-only) or
    the outputs the control plane takes from it afterwards (writable)."""

    path: Path
    writable: bool = False


@dataclass(frozen=True)
class ExecSpec:
    job_id: str
    label_key: str  # a digest of the label: sandboxes of different labels never share a directory
    command: list[str]
    env: dict[str, str]
    nodes: int
    cpus_per_node: int
    memory_mb: int
    gpus_per_node: int
    walltime_s: int
    region: str
    pool: str
    extra: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # the marking, for back ends that check it again (region workers)
    # Beside its sandbox, at the same paths: on Slurm through the file system the nodes share
    # with the control plane; a Ray node must hold them there too (else the job fails at once).
    mounts: tuple[Mount, ...] = ()
    agency: str = ""  # whose job it is: scratch space is per label and agency


class RunState(StrEnum):
    QUEUED = "queued"  # accepted by the engine, waiting there for resources: walltime not started
    RUNNING = "running"
    EXITED = "exited"  # finished by itself or by a signal; see exit_code
    LOST = "lost"  # the executor no longer knows the job (node or engine failure)


NOT_ENDED = frozenset({RunState.QUEUED, RunState.RUNNING})


@dataclass(frozen=True)
class Status:
    state: RunState
    exit_code: int | None = None
    signal: int | None = None  # set when a signal ended it
    cpu_s: float | None = None  # CPU time used, where the executor can tell
    energy_j: float | None = None  # measured IT energy, where the executor can tell
    detail: str | None = None  # why a job was lost, where the executor can tell


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str = ""


class Executor(Protocol):
    type: str
    # Capabilities, as named attributes (never checks of ``type``):
    # the job sees the control plane's staged files (ExecSpec.mounts: training inputs, model
    # folders) — false where a region worker runs the engine out of the control plane's reach;
    stages_files: bool
    # its processes draw from this machine's CPU packages (RAPL readings are split over them).
    runs_here: bool

    def start(self, spec: ExecSpec) -> Handle: ...

    def poll(self, handle: Handle) -> Status: ...

    def cancel(self, handle: Handle, grace_s: float) -> None:
        """Ask the job to stop (SIGTERM or the engine's equivalent), kill after ``grace_s``."""

    def kill(self, handle: Handle) -> None: ...

    def log_paths(self, handle: Handle) -> dict[str, Path]: ...

    def cleanup(self, handle: Handle) -> None: ...

    def health(self) -> Health:
        """Whether the back end can take work now, and why not (cheap: called for listings)."""
