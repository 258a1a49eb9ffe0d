"""Which replica serves the next call: the healthy replicas of each endpoint, least loaded first.

The endpoint supervisor refreshes the table from health checks; the gateway picks from it,
counts calls in flight (the autoscaler's load signal) and drops a replica that failed a
call until the next health check brings it back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Replica:
    job_id: str
    url: str  # base URL, e.g. http://127.0.0.1:41234
    in_flight: int = 0
    served: int = 0


class Router:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replicas: dict[str, list[Replica]] = {}

    def update(self, endpoint_id: str, ready: list[tuple[str, str]]) -> None:
        """Replace an endpoint's healthy replicas, keeping the counters of those that stay."""
        with self._lock:
            known = {r.job_id: r for r in self._replicas.get(endpoint_id, [])}
            fresh = []
            for job_id, url in ready:
                replica = known.get(job_id)
                if replica is None or replica.url != url:
                    replica = Replica(job_id, url)
                fresh.append(replica)
            if fresh:
                self._replicas[endpoint_id] = fresh
            else:
                self._replicas.pop(endpoint_id, None)

    def acquire(self, endpoint_id: str, exclude: frozenset[str] = frozenset()) -> Replica | None:
        """The least-loaded healthy replica not in ``exclude``, its in-flight count raised."""
        with self._lock:
            choices = [r for r in self._replicas.get(endpoint_id, []) if r.job_id not in exclude]
            if not choices:
                return None
            best = min(choices, key=lambda r: (r.in_flight, r.served))
            best.in_flight += 1
            return best

    def release(self, replica: Replica) -> None:
        with self._lock:
            replica.in_flight -= 1
            replica.served += 1

    def drop(self, endpoint_id: str, job_id: str) -> None:
        """A replica failed a call: route around it until a health check vouches for it."""
        with self._lock:
            self._replicas[endpoint_id] = [
                r for r in self._replicas.get(endpoint_id, []) if r.job_id != job_id
            ]

    def ready(self, endpoint_id: str) -> int:
        with self._lock:
            return len(self._replicas.get(endpoint_id, []))

    def in_flight(self, endpoint_id: str) -> int:
        with self._lock:
            return sum(r.in_flight for r in self._replicas.get(endpoint_id, []))
