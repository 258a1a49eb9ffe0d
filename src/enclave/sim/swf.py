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
from enclave.sim.workload import SimJob, Workload, no_gc

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


def _bytes(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def _text(path: Path) -> str:
    return _bytes(path).decode("utf-8", errors="replace")


def read_table(path: Path) -> tuple[dict[str, str], np.ndarray]:
    """The header fields and an (n, 18) array of the data lines."""
    raw = _bytes(path)
    fast = _read_integer_table(raw)
    if fast is not None:
        return fast
    return _read_any_table(path, raw.decode("utf-8", errors="replace"))


def _read_any_table(path: Path, text: str) -> tuple[dict[str, str], np.ndarray]:
    header: dict[str, str] = {}
    data: list[str] = []
    numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
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


# The common case, read column-wise: a header of comment lines, then lines of 18 integers (as in
# the Parallel Workloads Archive's traces). Anything else (a fraction, a comment after the data,
# a malformed line, other characters) returns None, and the general reader above parses it, or
# names the line it cannot.
_SPACE = np.zeros(256, dtype=bool)
_SPACE[[ord(c) for c in " \t\n\r"]] = True
_INTEGER_CHAR = _SPACE.copy()
_INTEGER_CHAR[[ord(c) for c in "-0123456789"]] = True
_MAX_DIGITS = 15  # every integer of up to 15 digits, and every sum of them below, is exact in float64


# What str.splitlines() also takes for a line break, besides LF, CRLF (and CR, checked apart).
_OTHER_BREAKS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9")


def _read_integer_table(raw: bytes) -> tuple[dict[str, str], np.ndarray] | None:
    pos = 0
    while pos < len(raw):  # the header: comment and blank lines before the first data line
        end = raw.find(b"\n", pos)
        end = len(raw) if end < 0 else end + 1
        stripped = raw[pos:end].strip()
        if stripped and not stripped.startswith(b";"):
            break
        pos = end
    head, body = raw[:pos], raw[pos:]
    if b";" in body or raw.count(b"\r") != raw.count(b"\r\n") or any(b in head for b in _OTHER_BREAKS):
        return None  # comments among the data, or line breaks other than LF and CRLF
    table = _integer_tokens(np.frombuffer(body, dtype=np.uint8))
    if table is None:
        return None
    header: dict[str, str] = {}
    for line in head.decode("utf-8", errors="replace").splitlines():  # as the general reader does
        comment = line.strip()
        key, sep, value = comment[1:].partition(":")
        if comment.startswith(";") and sep and key.strip():
            header[key.strip()] = value.strip()
    return header, table


def _integer_tokens(buf: np.ndarray) -> np.ndarray | None:
    """The (n, 18) table of whitespace-separated integers, with 18 on each non-blank line."""
    if not _INTEGER_CHAR[buf].all():
        return None
    token = ~_SPACE[buf]
    if not token.any():
        return np.empty((0, FIELDS))
    n = buf.size
    edge = np.empty(n + 1, dtype=bool)  # where a run of token characters starts or ends
    edge[0], edge[n] = token[0], token[-1]
    np.not_equal(token[1:], token[:-1], out=edge[1:n])
    bounds = np.flatnonzero(edge)
    starts, ends = bounds[0::2], bounds[1::2]
    minus = buf == ord("-")
    negative = minus[starts]
    first = starts + negative  # the first digit
    width = ends - first
    if np.count_nonzero(minus) != np.count_nonzero(negative) or width.min() < 1 or width.max() > _MAX_DIGITS:
        return None  # a '-' inside a token, a lone '-', or too many digits to be exact
    line_ends = np.append(np.flatnonzero(buf == ord("\n")), n)
    per_line = np.diff(np.searchsorted(starts, line_ends), prepend=0)  # tokens on each line
    if not ((per_line == 0) | (per_line == FIELDS)).all():
        return None
    values = np.empty(starts.size)
    for digits in range(1, int(width.max()) + 1):  # the tokens of each width at once
        of_width = np.flatnonzero(width == digits)
        if of_width.size:
            columns = buf[first[of_width, None] + np.arange(digits)] - ord("0")
            values[of_width] = columns @ 10.0 ** np.arange(digits - 1, -1, -1)
    values[negative] = -values[negative]
    return values.reshape(-1, FIELDS)


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
    with no_gc():
        jobs = _build(ids, owners, nodes, walltimes, submits, runs, label, agency_by)
    max_procs = _header_int(header, "MaxProcs") or _header_int(header, "MaxNodes")
    return Workload(jobs, str(path), skipped, max_procs)


def _build(
    ids: list[int],
    owners: list[int],
    nodes: list[int],
    walltimes: list[float],
    submits: list[float],
    runs: list[float],
    label: Label,
    agency_by: str,
) -> list[SimJob]:
    return [
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


def _header_int(header: dict[str, str], key: str) -> int | None:
    try:
        value = int(header.get(key, "").split()[0])
    except (ValueError, IndexError):
        return None
    return value if value > 0 else None
