"""Alibaba GPU cluster trace reader (``cluster-trace-gpu-v2023``, the ``openb_pod_list`` CSV).

Columns: ``name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos, pod_phase,
creation_time, deletion_time, scheduled_time`` (times in seconds from the trace start).

How a pod becomes a :class:`SimJob` on GPU nodes:

- one node; ``cpus = ceil(cpu_milli / 1000)``; ``memory_mb = memory_mib`` (the fleet files
  size memory in binary megabytes too; a pod asking for 0 MiB is given 1);
- ``gpus = num_gpu``. A pod with ``num_gpu = 1`` and ``gpu_milli < 1000`` holds a *share* of
  one GPU (GPU sharing in the original cluster); Enclave schedules whole GPUs, so the share
  is rounded up to one GPU — the replay overstates those pods' GPU demand, never understates
  it. :attr:`Pods.gpu_share` counts them so a report can say how many;
- ``submit = creation_time`` (shifted so the first replayed pod arrives at 0);
- ``run = deletion_time - scheduled_time``. Pods still running when the trace was cut
  (phase ``Running``, deleted at the trace's last instant) have a truncated run time;
- ``estimate = run``: the trace has no requested (limit) time, so the scheduler is given the
  true run time as the estimate — backfilling results on this trace are an upper bound on
  what user estimates would allow;
- ``qos`` from the trace's QoS class: ``LS`` (latency-sensitive) and ``Guaranteed`` → HIGH,
  ``Burstable`` → NORMAL, ``BE`` (best effort) → LOW. An unknown class is an error.

Pods that cannot be replayed are counted in :attr:`Workload.skipped` by reason, never
dropped silently: pods never scheduled (phase ``Pending``, no ``scheduled_time``) unless
``pending="replay"``, where they run for ``deletion_time - creation_time`` (the time they were
wanted); pods with no deletion time; pods whose times run backwards. A malformed row (wrong
column count, a number that is not one, a negative size) is an :class:`InvalidInput` naming
its line.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from enclave.errors import InvalidInput
from enclave.labels import Label
from enclave.scheduler.model import QOS, Job
from enclave.sim.workload import SimJob, Workload

COLUMNS = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "pod_phase",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
QOS_MAP: dict[str, QOS] = {
    "LS": QOS.HIGH,
    "Guaranteed": QOS.HIGH,
    "Burstable": QOS.NORMAL,
    "BE": QOS.LOW,
}
DEFAULT_AGENCY = "alibaba"
Pending = Literal["skip", "replay"]


@dataclass
class Pods:
    """The trace as columns, one entry per pod in file order (``line`` is the CSV line)."""

    name: list[str]
    qos: list[str]
    phase: list[str]
    line: np.ndarray  # int64
    cpus: np.ndarray  # int64, whole CPUs (rounded up)
    memory_mb: np.ndarray  # int64
    gpus: np.ndarray  # int64, whole GPUs (shares rounded up)
    gpu_milli: np.ndarray  # int64, per GPU, as in the trace
    creation: np.ndarray  # float64
    deletion: np.ndarray  # float64, NaN when empty
    scheduled: np.ndarray  # float64, NaN when never scheduled
    source: str = ""
    gpu_share: int = 0  # pods holding part of one GPU, rounded up to a whole one

    def __len__(self) -> int:
        return len(self.name)

    def fields(self) -> dict[str, list[str] | np.ndarray]:
        """Columns that scenario rules may match on."""
        return {"qos": self.qos, "phase": self.phase, "name": self.name, "gpus": self.gpus, "cpus": self.cpus}


@dataclass
class _Selection:
    keep: np.ndarray  # bool per pod
    run: np.ndarray  # float64 per pod (meaningful where kept)
    skipped: dict[str, int] = field(default_factory=dict)


def read_pods(path: Path) -> Pods:
    """Parse and validate the CSV; raises InvalidInput naming the first malformed line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise InvalidInput(f"{path.name}: empty file (expected a header: {','.join(COLUMNS)})")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InvalidInput(f"{path.name}:1: missing column(s) {', '.join(missing)}")
    col = {c: header.index(c) for c in COLUMNS}
    width = len(header)
    names: list[str] = []
    qos: list[str] = []
    phase: list[str] = []
    lines: list[int] = []
    ints: list[tuple[int, int, int, int]] = []
    times: list[tuple[float, float, float]] = []
    share = 0
    for row in reader:
        number = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            raise InvalidInput(f"{path.name}:{number}: expected {width} columns, found {len(row)}")
        try:
            cpu_milli = _int(row[col["cpu_milli"]], "cpu_milli")
            memory = _int(row[col["memory_mib"]], "memory_mib")
            num_gpu = _int(row[col["num_gpu"]], "num_gpu")
            gpu_milli = _int(row[col["gpu_milli"]], "gpu_milli")
            created = _time(row[col["creation_time"]], "creation_time", required=True)
            deleted = _time(row[col["deletion_time"]], "deletion_time", required=False)
            scheduled = _time(row[col["scheduled_time"]], "scheduled_time", required=False)
        except ValueError as exc:
            raise InvalidInput(f"{path.name}:{number}: {exc}") from exc
        if cpu_milli <= 0:
            raise InvalidInput(f"{path.name}:{number}: cpu_milli must be positive, got {cpu_milli}")
        if gpu_milli > 1000:
            raise InvalidInput(f"{path.name}:{number}: gpu_milli is per GPU, at most 1000, got {gpu_milli}")
        if (num_gpu > 0) != (gpu_milli > 0):
            raise InvalidInput(f"{path.name}:{number}: num_gpu {num_gpu} with gpu_milli {gpu_milli}")
        if num_gpu > 1 and gpu_milli < 1000:
            raise InvalidInput(
                f"{path.name}:{number}: a share of a GPU (gpu_milli {gpu_milli}) with num_gpu {num_gpu}"
            )
        qos_class = row[col["qos"]].strip()
        if qos_class not in QOS_MAP:
            raise InvalidInput(
                f"{path.name}:{number}: unknown qos {qos_class!r} (known: {', '.join(QOS_MAP)})"
            )
        if num_gpu == 1 and gpu_milli < 1000:
            share += 1
        names.append(row[col["name"]].strip())
        qos.append(qos_class)
        phase.append(row[col["pod_phase"]].strip())
        lines.append(number)
        ints.append((math.ceil(cpu_milli / 1000), max(memory, 1), num_gpu, gpu_milli))
        times.append((created, deleted, scheduled))
    i = np.array(ints, dtype=np.int64).reshape(-1, 4)
    t = np.array(times, dtype=np.float64).reshape(-1, 3)
    return Pods(
        name=names,
        qos=qos,
        phase=phase,
        line=np.array(lines, dtype=np.int64),
        cpus=i[:, 0],
        memory_mb=i[:, 1],
        gpus=i[:, 2],
        gpu_milli=i[:, 3],
        creation=t[:, 0],
        deletion=t[:, 1],
        scheduled=t[:, 2],
        source=str(path),
        gpu_share=share,
    )


def _int(text: str, what: str) -> int:
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what} is not an integer: {text!r}") from None
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    return value


def _time(text: str, what: str, *, required: bool) -> float:
    text = text.strip()
    if not text:
        if required:
            raise ValueError(f"{what} is empty")
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number: {text!r}")
    return value


def select(pods: Pods, pending: Pending = "skip") -> _Selection:
    """Which pods are replayed, their run times, and how many were left out and why."""
    if pending not in ("skip", "replay"):
        raise InvalidInput(f"pending must be 'skip' or 'replay', not {pending!r}")
    never = np.isnan(pods.scheduled)
    no_end = np.isnan(pods.deletion)
    run = pods.deletion - np.where(never, pods.creation, pods.scheduled)  # NaN without an end
    reasons = {  # NaN compares False: each mask holds only pods that have the times it reads
        "never scheduled (pending)": never & (pending == "skip"),
        "no deletion time": no_end,
        "scheduled before it was created": pods.scheduled < pods.creation,
        "deleted before it started": run < 0,
    }
    skip = np.zeros(len(pods), dtype=bool)
    skipped: dict[str, int] = {}
    for why, mask in reasons.items():
        mask = mask & ~skip  # each pod counted once, under its first reason
        if mask.any():
            skipped[why] = int(mask.sum())
        skip |= mask
    return _Selection(~skip, np.where(skip, 0.0, run), skipped)


def to_workload(pods: Pods, label: Label, *, pending: Pending = "skip") -> Workload:
    """SimJobs from parsed pods: agency ``alibaba``, ``label``, not deferrable (a scenario's
    rules may change all three)."""
    sel = select(pods, pending)
    kept = np.flatnonzero(sel.keep)
    submit = pods.creation[kept]
    order = kept[np.argsort(submit, kind="stable")]
    origin = float(pods.creation[order[0]]) if len(order) else 0.0
    # Plain Python values: indexing numpy scalars one by one is slow.
    idx = order.tolist()
    submits = (pods.creation[order] - origin).tolist()
    runs = sel.run[order].tolist()
    walltimes = np.maximum(sel.run[order], 1.0).tolist()
    cpus = pods.cpus[order].tolist()
    mems = pods.memory_mb[order].tolist()
    gpus = pods.gpus[order].tolist()
    qos = [QOS_MAP[pods.qos[k]] for k in idx]
    names = [pods.name[k] or f"line-{int(pods.line[k])}" for k in idx]
    jobs = [
        SimJob(
            Job(
                id=names[k],
                agency=DEFAULT_AGENCY,
                label=label,
                nodes=1,
                cpus=cpus[k],
                memory_mb=mems[k],
                gpus=gpus[k],
                walltime_s=walltimes[k],
                submit_s=submits[k],
                qos=qos[k],
                seq=k,
            ),
            runs[k],
        )
        for k in range(len(idx))
    ]
    if len({j.job.id for j in jobs}) != len(jobs):
        raise InvalidInput(f"{Path(pods.source).name}: pod names must be unique")
    return Workload(jobs, pods.source, sel.skipped, None)


def load_alibaba(path: Path, label: Label, *, pending: Pending = "skip") -> Workload:
    """Jobs from an Alibaba GPU v2023 pod list (see the module docstring for the mapping)."""
    return to_workload(read_pods(path), label, pending=pending)
