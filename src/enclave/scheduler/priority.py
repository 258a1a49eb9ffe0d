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
from itertools import repeat
from operator import attrgetter

import numpy as np

from enclave.scheduler.model import QOS, QOS_RANK, Job

GPU_BILLING_WEIGHT = 10.0  # one GPU-second bills like ten CPU-seconds
_SUBMIT, _NODES, _QOS = attrgetter("submit_s"), attrgetter("nodes"), attrgetter("qos")
job_agency = attrgetter("agency")
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
    agencies: Sequence[str] | None = None,
) -> np.ndarray:
    """One priority per job (higher runs first), computed column-wise with numpy.
    ``agencies``: the jobs' agencies, if the caller has them already (one pass less over the
    jobs, which for a long queue are far apart in memory)."""
    w = weights
    n = len(jobs)
    submit = np.fromiter(map(_SUBMIT, jobs), dtype=np.float64, count=n)
    nodes = np.fromiter(map(_NODES, jobs), dtype=np.float64, count=n)
    qos = np.fromiter(map(_QOS_FACTOR.__getitem__, map(_QOS, jobs)), dtype=np.float64, count=n)
    if agencies is None:
        agencies = list(map(job_agency, jobs))
    fs = np.fromiter(map(fairshare.get, agencies, repeat(1.0)), dtype=np.float64, count=n)
    age = np.clip((now - submit) / w.max_age_s, 0.0, 1.0)
    size = np.minimum(1.0, nodes / max(1, max_nodes))
    return w.age * age + w.fairshare * fs + w.qos * qos + w.size * size


def order_by_priority(jobs: Sequence[Job], prio: np.ndarray) -> list[Job]:
    """Highest priority first; ties in submission order (the queue's order)."""
    idx = np.argsort(-prio, kind="stable")
    return list(map(jobs.__getitem__, idx.tolist()))


def qos_rank(q: QOS) -> int:
    return QOS_RANK[q]
