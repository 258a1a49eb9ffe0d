"""Multifactor priority (age, fair-share, QOS, size) and fair-share usage with decay.

Like Slurm's multifactor plugin: each factor is in [0, 1] and the priority is their weighted
sum. The fair-share factor is ``2 ** (-usage_share / fair_share)`` where ``usage_share`` is
the agency's fraction of all decayed usage and ``fair_share`` its fraction of the shares:
an agency that used exactly its share gets 0.5, one that used nothing gets 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter

import numpy as np

from enclave.scheduler.model import PRIORITY_INPUTS, QOS, QOS_RANK, Job

GPU_BILLING_WEIGHT = 10.0  # one GPU-second bills like ten CPU-seconds
_SUBMIT, _PRIORITY_INDEX = attrgetter("submit_s"), attrgetter("priority_index")
_QOS_FACTOR = {q: r / max(QOS_RANK.values()) for q, r in QOS_RANK.items()}


def billing_units(job: Job, seconds: float) -> float:
    return job.nodes * (job.cpus + GPU_BILLING_WEIGHT * job.gpus) * max(0.0, seconds)


@dataclass
class FairShare:
    """Decayed usage per agency. Pure: the clock value is passed to every call."""

    half_life_s: float = 7 * 24 * 3600.0
    shares: Mapping[str, float] = field(default_factory=dict)  # absent agencies get 1.0
    _usage: dict[str, tuple[float, float]] = field(default_factory=dict)  # agency -> (units, at_s)

    def _decayed(self, units: float, at_s: float, now: float) -> float:
        if now <= at_s:
            return units
        return units * math.pow(2.0, -(now - at_s) / self.half_life_s)

    def charge(self, agency: str, units: float, now: float) -> None:
        units_then, at_s = self._usage.get(agency, (0.0, now))
        self._usage[agency] = (self._decayed(units_then, at_s, now) + units, now)

    def usage(self, now: float) -> dict[str, float]:
        return {a: self._decayed(u, t, now) for a, (u, t) in self._usage.items()}

    def factors(self, agencies: Sequence[str], now: float) -> dict[str, float]:
        usage = self.usage(now)
        total_usage = sum(usage.values())
        names = set(agencies) | set(usage)
        total_shares = sum(self.shares.get(a, 1.0) for a in names) or 1.0
        out = {}
        for a in names:
            share = self.shares.get(a, 1.0) / total_shares
            used = usage.get(a, 0.0) / total_usage if total_usage > 0 else 0.0
            out[a] = math.pow(2.0, -used / share) if share > 0 else 0.0
        return out


@dataclass(frozen=True)
class Weights:
    age: float = 1000.0
    fairshare: float = 10000.0
    qos: float = 100000.0
    size: float = 100.0
    max_age_s: float = 7 * 24 * 3600.0


def priorities(
    jobs: Sequence[Job],
    now: float,
    fairshare: Mapping[str, float],
    weights: Weights,
    max_nodes: int,
    grouped: Grouped | None = None,
) -> np.ndarray:
    """One priority per job (higher runs first), computed column-wise with numpy.

    Of each job only two fields are read: ``submit_s`` (for the age) and ``priority_index``
    (where its agency, QOS and nodes are in PRIORITY_INPUTS, shared by the jobs alike in
    them). The fair-share, QOS and size factors are worked out once per distinct inputs and
    spread to the jobs by that index: for a long queue, reading agency, QOS and nodes from
    100,000 objects far apart in memory cost more than all the rest. Each job's factors are
    the same floats as read one by one, summed in the same order: the priorities are the same
    to the bit. ``grouped``: ``group_inputs(jobs)``, if the caller has it already."""
    w = weights
    n = len(jobs)
    present, which = grouped if grouped is not None else group_inputs(jobs)
    inputs = [PRIORITY_INPUTS[i] for i in present]
    # Each weighted factor once per distinct inputs, by index: the very products a column of
    # each job's factor times its weight would hold.
    fs, qos, size = np.zeros((3, len(PRIORITY_INPUTS)), dtype=np.float64)
    fs[present] = w.fairshare * np.array([fairshare.get(p.agency, 1.0) for p in inputs], dtype=np.float64)
    qos[present] = w.qos * np.array([_QOS_FACTOR[p.qos] for p in inputs], dtype=np.float64)
    nodes = np.array([p.nodes for p in inputs], dtype=np.float64)
    size[present] = w.size * np.minimum(1.0, nodes / max(1, max_nodes))
    submit = np.fromiter(map(_SUBMIT, jobs), dtype=np.float64, count=n)
    prio = np.clip((now - submit) / w.max_age_s, 0.0, 1.0)  # the age factor
    prio *= w.age
    # Summed in place, in the order of ``age + fairshare + qos + size`` (float sums round).
    prio += fs[which]
    prio += qos[which]
    prio += size[which]
    return prio


# The distinct priority indexes of a queue's jobs (see Job.priority_index), and each job's.
Grouped = tuple[list[int], np.ndarray]


def group_inputs(jobs: Sequence[Job]) -> Grouped:
    which = np.fromiter(map(_PRIORITY_INDEX, jobs), dtype=np.intp, count=len(jobs))
    return np.flatnonzero(np.bincount(which)).tolist(), which


def order_by_priority(jobs: Sequence[Job], prio: np.ndarray) -> Sequence[Job]:
    """Highest priority first; ties in submission order (the queue's order)."""
    index = descending_stable(prio).tolist()
    if len(index) < 2:  # itemgetter of one index gives the item, not a tuple of it
        return [jobs[i] for i in index]
    # One C call that picks every job (a tuple): a little faster than a list built by map.
    ordered: tuple[Job, ...] = itemgetter(*index)(jobs)
    return ordered


def descending_stable(values: np.ndarray) -> np.ndarray:
    """``np.argsort(-values, kind="stable")`` (for values that are not NaN) in about half the
    time: numpy's default sort is vectorised, several times faster than its stable one, and
    where values are distinct there is only one order to find. Equal values (jobs alike
    submitted at the same instant) are then put back in index order: only those, with a second
    sort on (rank of the value, index), so a queue with few ties pays little for them."""
    order = np.argsort(-values)
    ranked = values.take(order)  # take: several times faster than values[order]
    tied = ranked[1:] == ranked[:-1]  # tied[i]: positions i and i + 1 hold equal values
    if tied.any():
        tied_before = np.zeros(len(values), dtype=bool)  # equal to the value before it
        tied_before[1:] = tied
        in_tie = tied_before.copy()
        in_tie[:-1] |= tied
        at = np.flatnonzero(in_tie)  # positions in a run of equal values
        rank = np.cumsum(~tied_before[at])  # each run's positions share a rank, rising run by run
        ties = order.take(at)
        order[at] = ties.take(np.argsort(rank * len(values) + ties))  # distinct keys: one order
    return order


def qos_rank(q: QOS) -> int:
    return QOS_RANK[q]
