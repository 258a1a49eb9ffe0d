"""Standard Workload Format reader (Parallel Workloads Archive, ``.swf`` and ``.swf.gz``).

Each data line has 18 whitespace-separated numbers; -1 means unknown. Header comments
(``; MaxProcs: 100``) are kept. A line that is not 18 numbers is an error naming the line;
a job that cannot be replayed (no processors, no run time, cancelled before it ran) is
skipped and counted by reason, so the summary says exactly what was left out.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np

from enclave.errors import InvalidInput
from enclave.labels import Label
from enclave.scheduler.model import Job
from enclave.sim.workload import SimJob, Workload

FIELDS = 18
# Column indexes (0-based) of the fields used here.
JOB, SUBMIT, WAIT, RUN, ALLOC_PROCS, REQ_PROCS, REQ_TIME, STATUS, USER, GROUP = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    10,
    11,
    12,
)
STATUS_CANCELLED = 5


def _text(path: Path) -> str:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    return raw.decode("utf-8", errors="replace")


def read_table(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """The header fields and an (n, 18) array of the data lines."""
    header: dict[str, str] = {}
    data: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(_text(path).splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(";"):
            key, sep, value = stripped[1:].partition(":")
            if sep and key.strip() and not data:
                header[key.strip()] = value.strip()
            continue
        data.append(stripped)
        numbers.append(number)
    if not data:
        return header, np.empty((0, FIELDS))
    try:
        with warnings.catch_warnings():
            # Older numpy warns and stops at a token that is not a number, newer raises.
            warnings.simplefilter("ignore", DeprecationWarning)
            table = np.fromstring(" ".join(data), dtype=np.float64, sep=" ")  # parses in C
    except ValueError:
        table = np.empty(0)
    if table.size != FIELDS * len(data):
        for number, line in zip(numbers, data, strict=True):  # the error path: find the line
            if len(line.split()) != FIELDS:
                raise InvalidInput(
                    f"{path.name}:{number}: expected {FIELDS} fields, found {len(line.split())}"
                )
        _name_bad_line(path)  # a token that is not a number stops the parse early
    return header, table.reshape(-1, FIELDS)


def _name_bad_line(path: Path) -> None:
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if line.strip() and not line.strip().startswith(";"):
            try:
                [float(p) for p in line.split()]
            except ValueError as exc:
                raise InvalidInput(f"{path.name}:{number}: not a number ({exc})") from exc
    raise InvalidInput(f"{path.name}: could not be parsed as SWF")


def load_swf(path: Path, label: Label, *, agency_by: str = "group") -> Workload:
    """Jobs from an SWF trace: processors requested (else allocated) as single-core nodes,
    the requested time as the estimate (else the run time), agencies from group or user ids."""
    header, t = read_table(path)
    procs = np.where(t[:, REQ_PROCS] > 0, t[:, REQ_PROCS], t[:, ALLOC_PROCS])
    run = t[:, RUN]
    reasons = {
        "no processor count": procs <= 0,
        "no run time": (procs > 0) & (run < 0),
        "cancelled before it ran": (procs > 0) & (run >= 0) & (t[:, STATUS] == STATUS_CANCELLED) & (run <= 0),
    }
    skip = np.zeros(len(t), dtype=bool)
    skipped: dict[str, int] = {}
    for why, mask in reasons.items():
        if mask.any():
            skipped[why] = int(mask.sum())
        skip |= mask
    kept = t[~skip]
    procs = procs[~skip]
    estimate = np.where(kept[:, REQ_TIME] > 0, kept[:, REQ_TIME], kept[:, RUN])
    run = np.minimum(kept[:, RUN], estimate)  # a job is killed at its limit
    submit = kept[:, SUBMIT] - (kept[:, SUBMIT].min() if len(kept) else 0.0)  # traces need not be sorted
    owner = kept[:, GROUP if agency_by == "group" else USER]
    order = np.argsort(submit, kind="stable")
    # Plain Python values, in submission order: indexing numpy scalars one by one is slow.
    ids = kept[order, JOB].astype(np.int64).tolist()
    owners = owner[order].astype(np.int64).tolist()
    nodes = procs[order].astype(np.int64).tolist()
    walltimes = np.maximum(estimate[order], 1.0).tolist()
    submits = submit[order].tolist()
    runs = np.maximum(run[order], 0.0).tolist()
    jobs = [
        SimJob(
            Job(
                id=str(ids[k]),
                agency=f"{agency_by}-{owners[k]}" if owners[k] >= 0 else "unknown",
                label=label,
                nodes=nodes[k],
                cpus=1,
                memory_mb=1,
                gpus=0,
                walltime_s=walltimes[k],
                submit_s=submits[k],
                seq=k,
            ),
            runs[k],
        )
        for k in range(len(ids))
    ]
    max_procs = _header_int(header, "MaxProcs") or _header_int(header, "MaxNodes")
    return Workload(jobs, str(path), skipped, max_procs)


def _header_int(header: dict[str, str], key: str) -> int | None:
    try:
        value = int(header.get(key, "").split()[0])
    except (ValueError, IndexError):
        return None
    return value if value > 0 else None
