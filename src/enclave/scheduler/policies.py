"""Scheduling policies: a small interface, a table of named implementations, one default.

The queue handed to a pass is in submission order (the store and the simulator keep it so);
a policy says in which order the pass considers jobs and whether later jobs may backfill
around a blocked one. ``fcfs`` is strict submission order; ``easy`` is EASY backfilling in
submission order (the classic algorithm, used to validate against published results);
``priority`` is EASY backfilling over the multifactor priority (age, fair-share with decay,
QOS, size) — the live default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from enclave.scheduler.model import Job
from enclave.scheduler.priority import FairShare, Weights, order_by_priority, priorities

if TYPE_CHECKING:
    from enclave.scheduler.capacity import ClusterState


class Policy(Protocol):
    name: str
    backfill: bool

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]: ...


def _submit_order(queue: Sequence[Job]) -> list[Job]:
    return list(queue)  # already in submission order: sorting 100k jobs each pass costs ~50 ms


@dataclass
class FCFS:
    name: str = "fcfs"
    backfill: bool = False

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]:
        return _submit_order(queue)


@dataclass
class EASY:
    name: str = "easy"
    backfill: bool = True

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]:
        return _submit_order(queue)


@dataclass
class MultifactorEASY:
    """EASY backfilling over multifactor priority; fair-share usage lives in ``fairshare``."""

    fairshare: FairShare = field(default_factory=FairShare)
    weights: Weights = field(default_factory=Weights)
    name: str = "priority"
    backfill: bool = True

    def order(self, queue: Sequence[Job], now: float, state: ClusterState) -> list[Job]:
        if not queue:
            return []
        factors = self.fairshare.factors(sorted({j.agency for j in queue}), now)
        max_nodes = max(p.spec.count for r in state.regions for p in r.pools)
        return order_by_priority(queue, priorities(queue, now, factors, self.weights, max_nodes))


POLICIES = {"fcfs": FCFS, "easy": EASY, "priority": MultifactorEASY}
DEFAULT_POLICY = "priority"


def make_policy(name: str = DEFAULT_POLICY) -> Policy:
    try:
        factory = POLICIES[name]
    except KeyError:
        from enclave.errors import InvalidInput

        raise InvalidInput(f"unknown scheduling policy {name!r} (known: {', '.join(POLICIES)})") from None
    policy: Policy = factory()
    return policy
